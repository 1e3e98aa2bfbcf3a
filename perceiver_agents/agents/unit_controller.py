"""Perceiver IO as a unit controller: units in, one action distribution per ally out.

Shape letters: B batch, N units (entities), F unit features, Q allies that act (queries),
K enemies (pointer targets), M latents, C attention width, E per-unit feature width,
D summary width.

    units [B, N, F] + mask ──embed──▶ [B, N, C] ──cross-attend──▶ latents [B, M, C]
        ──latent self-attention──▶ latents ──decoder──▶ one output per query:
            the units themselves  ──▶ features [B, N, E]
            a learned summary     ──▶ embedding [B, D] ──▶ value
    ally a   (unit a):      features ⊕ embedding ──▶ move/stop logits [5]
    enemy j  (unit o + j):  pointer: ally query · enemy key ──▶ attack-j logits [K]
    logits [B, Q, 5 + K], masked by the available actions; value [B]

The allies are the first Q units and the enemies the K units from `enemy_offset` on
(the layout of agents/envs/jax_envs/smax.py in both its views). Nothing depends on the
order of the units (no positional encodings; each query decodes on its own), so
permuting allies permutes their rows of logits, permuting enemies permutes the attack
columns, and any number of units works: one set of parameters plays every map.

The encoder is swappable for ablations: 'perceiver_io' (PerceiverIOUnitEncoder, here),
'transformer' and 'mlp' (the agents' entity encoders, agents/encoders.py), or
'package.module:factory' with the entity-encoder contract of agents/encoders.py.
"""

from typing import Any, Callable, Mapping, Optional

import chex
import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_agents import blocks
from perceiver_agents.agents import encoders as encoders_lib
from perceiver_agents.agents.heads import mask_logits

NUM_MOVES = 5  # Move north, east, south, west; stop.


class PerceiverIOUnitEncoder(encoders_lib.PerceiverIOEntityEncoder):
  """Units cross-attended into M latents; decoded with one query per unit (the unit's own
  embedding) and a learned summary query. The entity-encoder contract of
  agents/encoders.py: embedding [B, D] (the summary query's output), features [B, N, E].
  The same encoder as PerceiverIOEntityEncoder; only the decoding differs."""

  def __init__(self, *, output_size: int, entity_size: int, num_latents: int = 16,
               num_channels: int = 64, num_self_attends: int = 1, num_heads: int = 4,
               widening_factor: int = 2, name: Optional[str] = None):
    super().__init__(output_size=output_size, entity_size=entity_size,
                     num_latents=num_latents, num_channels=num_channels,
                     num_self_attends=num_self_attends, num_heads=num_heads,
                     widening_factor=widening_factor, name=name)

  def __call__(self, entities: jax.Array, mask: jax.Array, *,
               is_training: bool) -> encoders_lib.EncoderOutput:
    """entities [B, N, F], mask bool [B, N] -> embedding [B, D], features [B, N, E]."""
    encoders_lib._check_entities(entities, mask)  # pylint: disable=protected-access
    batch = entities.shape[0]
    x = hk.Linear(self._num_channels, name='embed')(entities)              # [B, N, C]
    x = jnp.where(mask[..., None], x, 0.)
    z = self._encoder(x, self._encoder.latents(), is_training=is_training,
                      input_mask=mask)                                     # [B, M, C]
    summary = hk.get_parameter('summary_query', [1, self._num_channels],
                               init=hk.initializers.TruncatedNormal(0.02))
    queries = jnp.concatenate([x, jnp.broadcast_to(
        summary, (batch, 1, self._num_channels))], axis=1)                 # [B, N+1, C]
    decoded = blocks.CrossAttention(
        num_heads=1, widening_factor=self._widening_factor, shape_for_attn='q',
        name='unit_decoder')(queries, z, is_training=is_training)          # [B, N+1, C]
    features = hk.Linear(self._entity_size, name='unit_out')(decoded[:, :-1])
    embedding = jax.nn.relu(hk.Linear(self._output_size, name='summary')(
        decoded[:, -1]))                                                   # [B, D]
    return encoders_lib.EncoderOutput(embedding, jnp.where(mask[..., None], features, 0.))


ENCODERS: Mapping[str, Callable[..., Any]] = {
    'perceiver_io': PerceiverIOUnitEncoder,
    'transformer': encoders_lib.TransformerEntityEncoder,
    'mlp': encoders_lib.MLPEntityEncoder,
}


def encoder_kwargs(name: str, *, num_latents: int, num_channels: int, num_layers: int,
                   num_heads: int) -> dict:
  """The size keywords of encoder `name` (custom 'module:factory' encoders get none)."""
  if name == 'perceiver_io':
    return dict(num_latents=num_latents, num_channels=num_channels,
                num_self_attends=num_layers, num_heads=num_heads)
  if name == 'transformer':
    return dict(num_layers=num_layers, num_channels=num_channels, num_heads=num_heads)
  if name == 'mlp':
    return dict(hidden_sizes=(num_channels, num_channels))
  return {}


class UnitController(hk.Module):
  """Action logits for the first Q units and a value, from a set of units (module doc).

  Args:
    encoder: a name of ENCODERS or 'package.module:factory'.
    encoder_kwargs: extra keywords for the encoder factory.
    embedding_size: D; entity_size: E; hidden_size: width of the action and value MLPs.
  """

  def __init__(self, *, encoder: str = 'perceiver_io',
               encoder_kwargs: Optional[Mapping[str, Any]] = None,
               embedding_size: int = 64, entity_size: int = 32, hidden_size: int = 64,
               name: str = 'unit_controller'):
    super().__init__(name=name)
    factory = encoders_lib.resolve(encoder, ENCODERS, field='agent.encoder')
    self._encoder_name = encoder
    self._encoder = factory(output_size=embedding_size, entity_size=entity_size,
                            **dict(encoder_kwargs or {}))
    self._embedding_size = embedding_size
    self._entity_size = entity_size
    self._hidden_size = hidden_size

  def __call__(self, units: jax.Array, unit_mask: jax.Array, action_mask: jax.Array, *,
               enemy_offset: int, is_training: bool = False
               ) -> tuple[jax.Array, jax.Array]:
    """units [B, N, F], unit_mask bool [B, N], action_mask bool [B, Q, 5 + K] ->
    (logits [B, Q, 5 + K] masked, value [B])."""
    chex.assert_rank([units, unit_mask, action_mask], [3, 2, 3])
    batch, num_units, _ = units.shape
    num_queries, num_actions = action_mask.shape[1:]
    num_enemies = num_actions - NUM_MOVES
    if num_queries > enemy_offset or enemy_offset + num_enemies > num_units:
      raise ValueError(f'action_mask: {num_queries} allies and {num_enemies} enemies from '
                       f'unit {enemy_offset} do not fit {num_units} units.')
    out = encoders_lib.check_output(
        self._encoder(units, unit_mask, is_training=is_training), batch=batch,
        output_size=self._embedding_size,
        features_shape=(batch, num_units, self._entity_size),
        name=f'agent.encoder {self._encoder_name!r}')
    context = jnp.broadcast_to(out.embedding[:, None],
                               (batch, num_queries, self._embedding_size))
    allies = jnp.concatenate([out.features[:, :num_queries], context], -1)  # [B, Q, E+D]
    allies = hk.nets.MLP([self._hidden_size], activate_final=True, name='ally')(allies)
    moves = hk.Linear(NUM_MOVES, name='move_logits',
                      w_init=hk.initializers.VarianceScaling(0.01))(allies)  # [B, Q, 5]
    enemies = out.features[:, enemy_offset:enemy_offset + num_enemies]    # [B, K, E]
    keys = hk.Linear(self._entity_size, name='enemy_key')(enemies)         # [B, K, E]
    query = hk.Linear(self._entity_size, name='attack_query',
                      w_init=hk.initializers.VarianceScaling(0.01))(allies)  # [B, Q, E]
    attack = jnp.einsum('bqe,bke->bqk', query, keys) / jnp.sqrt(self._entity_size)
    logits = mask_logits(jnp.concatenate([moves, attack], -1), action_mask)
    value = hk.nets.MLP([self._hidden_size, 1], name='value')(out.embedding)[:, 0]
    return logits, value
