"""The IMPALA networks as pure functions: init, step (actors) and unroll (learner).

All three share one set of parameters: they run the same agents/networks.AgentNetwork
(encoders -> torso -> LSTM core -> policy heads and value).

Shape letters: E environments, B trajectories, K time steps, D core width.
"""

from typing import Any, Callable, NamedTuple

import haiku as hk
import jax
import ml_collections

from perceiver_agents.agents import heads as heads_lib
from perceiver_agents.agents import networks
from perceiver_agents.agents.specs import EnvSpec


class ImpalaNetworks(NamedTuple):
  """unroll: hk.TransformedWithState, `apply(params, state, rng, batch, is_training)` ->
    AgentOutput [B, K] (what the learner's Task calls `model`; its `init` initialises);
  step: hk.Transformed, `apply(params, rng, observation [E, ...], first [E], core_state)`
    -> (AgentOutput [E], core_state), one step of E environments (the actors');
  core_size: D, the LSTM width (its initial state is zeros)."""
  unroll: hk.TransformedWithState
  step: hk.Transformed
  core_size: int


def make_networks(env_spec: EnvSpec, config: ml_collections.ConfigDict) -> ImpalaNetworks:
  """The networks of `env_spec` with the `agent` config section's sizes and encoders."""
  def step(observation, first, state):
    net = networks.AgentNetwork(env_spec=env_spec, config=config)
    return net.step(observation, first, state)

  def unroll(batch, is_training):
    net = networks.AgentNetwork(env_spec=env_spec, config=config)
    state = hk.LSTMState(hidden=batch['core_state']['hidden'],
                         cell=batch['core_state']['cell'])
    return net.unroll(batch['observation'], batch['first'], state, batch['action'],
                      is_training=is_training)

  return ImpalaNetworks(unroll=hk.transform_with_state(unroll), step=hk.transform(step),
                        core_size=config.core_size)


def make_policy(nets: ImpalaNetworks, env_spec: EnvSpec) -> Callable[..., Any]:
  """The actors' jitted policy step.

  policy(params, key, observation {k: [E, ...]}, first bool [E], core_state) ->
    (action {k: int32 [E]}, behaviour log-probability f32 [E], next core_state, next key).
  The key is split inside the step (one dispatch per step, not two).
  """
  def act(params, key, observation, first, state):
    next_key, key = jax.random.split(key)
    out, state = nets.step.apply(params, key, observation, first, state)
    logp = heads_lib.log_prob(env_spec.action, out.logits, out.action)
    return out.action, logp, state, next_key
  return jax.jit(act)
