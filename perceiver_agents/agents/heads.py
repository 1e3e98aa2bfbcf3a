"""Policy heads over a structured action space, and their log-probabilities and entropies.

Shape letters: B batch, D core width, A action types, N entities, H x W map, E feature
width of entities / cells.

The action type is sampled first (masked by the available actions); every argument head
is conditioned on it (autoregressive embedding, as in AlphaStar). With an `action` given
(the learner's case) the heads are evaluated at that action instead of sampling.
"""

from typing import Mapping, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_agents.agents.specs import ActionSpec

MASKED_LOGIT = -1e9  # Logit of an unavailable choice: probability 0 after softmax.


def mask_logits(logits: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """Sets logits [..., K] to MASKED_LOGIT where mask [..., K] is False.

  Where a row has no available choice at all, every choice gets the same logit: the
  distribution is uniform rather than NaN (the environment adapters reject such
  observations before they reach the network; this keeps padded rows finite).
  """
  if mask is None:
    return logits
  return jnp.where(mask, logits, MASKED_LOGIT)


class PolicyHeads(hk.Module):
  """Action-type logits and one head per argument of `action_spec`."""

  def __init__(self, *, action_spec: ActionSpec, name: Optional[str] = None):
    super().__init__(name=name)
    self._spec = action_spec

  def __call__(self, core: jax.Array, *, action_mask: Optional[jax.Array] = None,
               entity_features: Optional[jax.Array] = None,
               entity_mask: Optional[jax.Array] = None,
               cell_features: Optional[jax.Array] = None,
               action: Optional[Mapping[str, jax.Array]] = None
               ) -> tuple[dict, dict]:
    """Logits of every head and the action (sampled, or `action` if given).

    Args:
      core: [B, D] the core's output.
      action_mask: bool [B, A], available action types (None: all).
      entity_features: [B, N, E] for pointer arguments; entity_mask bool [B, N].
      cell_features: [B, H, W, E] for point arguments.
      action: optional {key: int [B]}, the action to evaluate instead of sampling.
    Returns:
      (logits {key: [B, K_key]}, action {key: int32 [B]}).
    """
    spec = self._spec
    batch, width = core.shape
    logits = {'function': mask_logits(
        hk.Linear(spec.num_functions, name='function_logits')(core), action_mask)}
    chosen = {}
    chosen['function'] = self._choose('function', logits['function'], action)
    function_embedding = hk.Linear(width, name='function_embedding')(
        jax.nn.one_hot(chosen['function'], spec.num_functions))           # [B, D]
    context = jax.nn.relu(core + function_embedding)                     # [B, D]
    for arg in spec.args:
      if arg.kind == 'categorical':
        arg_logits = hk.Linear(arg.size, name=f'{arg.name}_logits')(context)
      elif arg.kind == 'pointer':
        if entity_features is None:
          raise ValueError(f'argument {arg.name!r}: a pointer needs entity features.')
        query = hk.Linear(entity_features.shape[-1], name=f'{arg.name}_query')(context)
        arg_logits = jnp.einsum('bne,be->bn', entity_features, query)     # [B, N]
        arg_logits = mask_logits(arg_logits / jnp.sqrt(query.shape[-1]), entity_mask)
      else:  # 'point'
        if cell_features is None:
          raise ValueError(f'argument {arg.name!r}: a point needs cell features.')
        query = hk.Linear(cell_features.shape[-1], name=f'{arg.name}_query')(context)
        arg_logits = jnp.einsum('bhwe,be->bhw', cell_features, query)     # [B, H, W]
        arg_logits = jnp.reshape(arg_logits, [batch, -1]) / jnp.sqrt(query.shape[-1])
      logits[arg.name] = arg_logits
      chosen[arg.name] = self._choose(arg.name, arg_logits, action)
    return logits, chosen

  @staticmethod
  def _choose(key: str, logits: jax.Array, action: Optional[Mapping[str, jax.Array]]):
    if action is None:
      return jax.random.categorical(hk.next_rng_key(), logits).astype(jnp.int32)
    if key not in action:
      raise ValueError(f'action: missing {key!r}; got keys {sorted(action)}.')
    return action[key].astype(jnp.int32)


def _used(spec: ActionSpec, function: jax.Array) -> jax.Array:
  """float [B, K]: 1 where the chosen function [B] takes argument k."""
  return jnp.asarray(spec.usage, jnp.float32)[function]


def log_prob(spec: ActionSpec, logits: Mapping[str, jax.Array],
             action: Mapping[str, jax.Array]) -> jax.Array:
  """Log-probability [B] of `action` under the heads' `logits`; unused args count 0."""
  def head(key):
    logp = jax.nn.log_softmax(logits[key])
    return jnp.take_along_axis(logp, action[key][:, None].astype(jnp.int32), 1)[:, 0]
  total = head('function')
  used = _used(spec, action['function'])
  for k, arg in enumerate(spec.args):
    total = total + used[:, k] * head(arg.name)
  return total


def entropy(spec: ActionSpec, logits: Mapping[str, jax.Array],
            action: Mapping[str, jax.Array]) -> jax.Array:
  """Entropy [B] of the action type plus that of the arguments the chosen type uses."""
  def head(key):
    logp = jax.nn.log_softmax(logits[key])
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)
  total = head('function')
  used = _used(spec, action['function'])
  for k, arg in enumerate(spec.args):
    total = total + used[:, k] * head(arg.name)
  return total
