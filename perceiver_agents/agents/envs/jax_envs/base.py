"""The protocol of a pure-JAX environment, as the on-device (Anakin) loop uses it.

Shape letters: E environments, A agents (allies; 1 for single-agent environments),
N entities, F entity features, K actions, S scalars, H x W x C planes.

An environment is an object with static attributes and two pure functions of one
environment (no batch axis), both jit- and vmap-able:

    num_agents: int                   A
    num_actions: int                  K, per agent
    observation_spec: {key: (shape, dtype)} of one observation, each shape starting with A
    reset(key) -> (obs, state)
    step(key, state, action int32[A]) -> (obs, state, reward f32[A], done bool[], info)

`step` resets by itself: where `done`, the returned obs and state start the next episode.
Observation keys (a subset, per agent):

    'entities'     f32  [A, N, F]   units (entity sets)
    'entity_mask'  bool [A, N]      True for real (visible, alive) entities
    'scalars'      f32  [A, S]      a flat vector
    'spatial'      f32  [A, H, W, C] planes
    'action_mask'  bool [A, K]      available actions; at least one is True in each row
    'agent_mask'   bool [A]         True for real agents (False for padding slots)

`info` is a dict of f32 [] scalars that mean something at `done` (e.g. 'won').
An environment may also define batch_reset(keys[E]) / batch_step(keys[E], states,
actions[E, A]) when its batch is not a plain vmap (a mixture of maps with different unit
counts); `batched(env)` returns those, or the vmapped single-env functions.
"""

from typing import Any, Callable, Mapping, Protocol

import jax

Observation = Mapping[str, jax.Array]


class JaxEnv(Protocol):
  """A pure-JAX environment (see the module docstring)."""
  num_agents: int
  num_actions: int
  observation_spec: Mapping[str, tuple]

  def reset(self, key: jax.Array) -> tuple[Observation, Any]:
    ...

  def step(self, key: jax.Array, state: Any, action: jax.Array
           ) -> tuple[Observation, Any, jax.Array, jax.Array, Mapping[str, jax.Array]]:
    ...


def batched(env: JaxEnv) -> tuple[Callable, Callable]:
  """(reset(keys[E]), step(keys[E], states, actions[E, A])) for a batch of environments."""
  reset = getattr(env, 'batch_reset', None) or jax.vmap(env.reset)
  step = getattr(env, 'batch_step', None) or jax.vmap(env.step)
  return reset, step


def require(module: str, extra: str = 'jaxenv'):
  """Imports `module`, or raises ImportError naming the extra that installs it."""
  import importlib  # pylint: disable=g-import-not-at-top
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ImportError(
        f'{module} is not installed ({e}); pure-JAX environments need the optional '
        f"extra: pip install 'perceiver-agents[{extra}]'") from None
