"""Observation encoders of an agent: entity sets, spatial planes and scalar vectors.

Shape letters: B batch, N entities, F entity features, H x W map, C channels,
M latents, D summary width (`output_size`), E per-entity / per-cell width.

The encoder contract (what `AgentNetwork` relies on, and what
`perceiver_agents.testing.check_entity_encoder` verifies for your own encoder):

  Entity encoder — a Haiku module built as `factory(*, output_size, entity_size)`:
    __call__(entities f32[B, N, F], mask bool[B, N], *, is_training) -> EncoderOutput
      embedding  f32[B, output_size]     a summary of the set
      features   f32[B, N, entity_size]  one vector per entity (pointer heads use them),
                                         zero where `mask` is False
    Padding invariance: neither output depends on the features of masked entities, nor
    on how much padding follows the real ones. With no real entity, outputs are finite.

  Spatial encoder — `factory(*, output_size, cell_size)`:
    __call__(planes f32[B, H, W, C], *, is_training) -> EncoderOutput
      embedding f32[B, output_size];  features f32[B, H, W, cell_size] (point heads)

  Scalar encoder — `factory(*, output_size)`:
    __call__(scalars f32[B, S], *, is_training) -> f32[B, output_size]

An encoder is chosen by name ('perceiver_io', 'transformer', 'mlp'; 'conv' for planes) or
as 'package.module:factory', which is imported and called with the keywords above plus
the `encoder_kwargs` of the agent config.
"""

import importlib
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import chex
import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_agents import blocks


class EncoderOutput(NamedTuple):
  embedding: jax.Array           # [B, D]
  features: Optional[jax.Array]  # [B, N, E] per entity, or [B, H, W, E] per cell.


def _check_entities(entities: jax.Array, mask: jax.Array) -> None:
  if entities.ndim != 3:
    raise ValueError(f'entities: expected [B, N, F], got shape {entities.shape}.')
  if mask.shape != entities.shape[:2]:
    raise ValueError(f'mask: expected shape {entities.shape[:2]} (the [B, N] of '
                     f'entities), got {mask.shape}.')
  if mask.dtype != jnp.bool_:
    raise ValueError(f'mask: expected bool, got {mask.dtype}.')


def _zero_padding(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Sets the rows of x [B, N, C] where mask [B, N] is False to zero."""
  return jnp.where(mask[..., None], x, jnp.zeros_like(x))


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of x [B, N, C] over the rows where mask [B, N] is True; zeros for none."""
  weights = mask.astype(x.dtype)[..., None]                      # [B, N, 1]
  total = jnp.sum(x * weights, axis=1)                           # [B, C]
  return total / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


class PerceiverIOEntityEncoder(hk.Module):
  """Perceiver IO over an entity set: N entities cross-attended into M latents.

  The embedding is a projection of the flattened latents (their order is fixed, they are
  learned queries); per-entity features are decoded from the latents with one query per
  entity position (the entity's own embedding), so the cost is O(N * M), not O(N^2).
  """

  def __init__(self, *, output_size: int, entity_size: int, num_latents: int = 32,
               num_channels: int = 64, num_self_attends: int = 2, num_heads: int = 4,
               widening_factor: int = 2, name: Optional[str] = None):
    super().__init__(name=name)
    self._output_size = output_size
    self._entity_size = entity_size
    self._num_channels = num_channels
    self._num_heads = num_heads
    self._widening_factor = widening_factor
    self._encoder = blocks.PerceiverEncoder(
        num_self_attends_per_block=num_self_attends, num_blocks=1,
        z_index_dim=num_latents, num_z_channels=num_channels,
        num_cross_attend_heads=1, num_self_attend_heads=num_heads,
        cross_attend_widening_factor=widening_factor,
        self_attend_widening_factor=widening_factor)

  def __call__(self, entities: jax.Array, mask: jax.Array, *,
               is_training: bool) -> EncoderOutput:
    """entities [B, N, F], mask bool [B, N] -> embedding [B, D], features [B, N, E]."""
    _check_entities(entities, mask)
    x = _zero_padding(hk.Linear(self._num_channels, name='embed')(entities), mask)  # [B,N,C]
    # Shared [M, C] latents: the first cross-attention normalises and projects them once.
    z = self._encoder(x, self._encoder.latents(), is_training=is_training,
                      input_mask=mask)                                     # [B, M, C]
    embedding = jax.nn.relu(hk.Linear(self._output_size, name='summary')(
        hk.Flatten()(z)))                                                  # [B, D]
    queries = blocks.CrossAttention(
        num_heads=1, widening_factor=self._widening_factor, shape_for_attn='q',
        name='entity_decoder')(x, z, is_training=is_training)              # [B, N, C]
    features = hk.Linear(self._entity_size, name='entity_out')(queries)    # [B, N, E]
    return EncoderOutput(embedding, _zero_padding(features, mask))


class TransformerEntityEncoder(hk.Module):
  """AlphaStar-style entity Transformer: masked self-attention, then masked mean pooling."""

  def __init__(self, *, output_size: int, entity_size: int, num_layers: int = 2,
               num_channels: int = 64, num_heads: int = 4, widening_factor: int = 2,
               name: Optional[str] = None):
    super().__init__(name=name)
    self._output_size = output_size
    self._entity_size = entity_size
    self._num_layers = num_layers
    self._num_channels = num_channels
    self._num_heads = num_heads
    self._widening_factor = widening_factor

  def __call__(self, entities: jax.Array, mask: jax.Array, *,
               is_training: bool) -> EncoderOutput:
    """entities [B, N, F], mask bool [B, N] -> embedding [B, D], features [B, N, E]."""
    _check_entities(entities, mask)
    x = _zero_padding(hk.Linear(self._num_channels, name='embed')(entities), mask)  # [B,N,C]
    attention_mask = blocks.make_cross_attention_mask(mask, mask)          # [B, N, N]
    for _ in range(self._num_layers):
      x = blocks.SelfAttention(num_heads=self._num_heads,
                               widening_factor=self._widening_factor)(
                                   x, is_training=is_training,
                                   attention_mask=attention_mask)          # [B, N, C]
      x = _zero_padding(x, mask)
    features = _zero_padding(hk.Linear(self._entity_size, name='entity_out')(x), mask)
    embedding = jax.nn.relu(hk.Linear(self._output_size, name='summary')(
        masked_mean(x, mask)))                                             # [B, D]
    return EncoderOutput(embedding, features)


class MLPEntityEncoder(hk.Module):
  """Each entity through the same MLP, then masked mean pooling: no relations between
  entities are modelled (the baseline the attention encoders should beat)."""

  def __init__(self, *, output_size: int, entity_size: int,
               hidden_sizes: Sequence[int] = (64, 64), name: Optional[str] = None):
    super().__init__(name=name)
    self._output_size = output_size
    self._entity_size = entity_size
    self._hidden_sizes = tuple(hidden_sizes)

  def __call__(self, entities: jax.Array, mask: jax.Array, *,
               is_training: bool) -> EncoderOutput:
    """entities [B, N, F], mask bool [B, N] -> embedding [B, D], features [B, N, E]."""
    del is_training
    _check_entities(entities, mask)
    x = hk.nets.MLP(self._hidden_sizes, activate_final=True)(entities)     # [B, N, C]
    features = _zero_padding(hk.Linear(self._entity_size, name='entity_out')(x), mask)
    embedding = jax.nn.relu(hk.Linear(self._output_size, name='summary')(
        masked_mean(x, mask)))                                             # [B, D]
    return EncoderOutput(embedding, features)


def _check_planes(planes: jax.Array) -> None:
  if planes.ndim != 4:
    raise ValueError(f'planes: expected [B, H, W, C], got shape {planes.shape}.')


class ConvSpatialEncoder(hk.Module):
  """A stride-1 conv net over planes; the embedding projects the flattened map."""

  def __init__(self, *, output_size: int, cell_size: int,
               channels: Sequence[int] = (16, 32), kernel_size: int = 3,
               name: Optional[str] = None):
    super().__init__(name=name)
    self._output_size = output_size
    self._cell_size = cell_size
    self._channels = tuple(channels)
    self._kernel_size = kernel_size

  def __call__(self, planes: jax.Array, *, is_training: bool) -> EncoderOutput:
    """planes [B, H, W, C] -> embedding [B, D], features [B, H, W, E]."""
    del is_training
    _check_planes(planes)
    x = planes
    for channels in self._channels:
      x = jax.nn.relu(hk.Conv2D(channels, self._kernel_size)(x))           # [B, H, W, C']
    features = hk.Conv2D(self._cell_size, 1, name='cell_out')(x)           # [B, H, W, E]
    embedding = jax.nn.relu(hk.Linear(self._output_size, name='summary')(
        hk.Flatten()(x)))                                                  # [B, D]
    return EncoderOutput(embedding, features)


class PerceiverIOSpatialEncoder(hk.Module):
  """Perceiver IO over pixels: each cell (its channels + Fourier features of its position)
  is an input token; cells are decoded back with Fourier-position queries."""

  def __init__(self, *, output_size: int, cell_size: int, num_latents: int = 16,
               num_channels: int = 64, num_self_attends: int = 1, num_heads: int = 4,
               num_bands: int = 4, widening_factor: int = 2, name: Optional[str] = None):
    super().__init__(name=name)
    self._output_size = output_size
    self._cell_size = cell_size
    self._num_channels = num_channels
    self._num_bands = num_bands
    self._widening_factor = widening_factor
    self._encoder = blocks.PerceiverEncoder(
        num_self_attends_per_block=num_self_attends, num_blocks=1,
        z_index_dim=num_latents, num_z_channels=num_channels,
        num_cross_attend_heads=1, num_self_attend_heads=num_heads,
        cross_attend_widening_factor=widening_factor,
        self_attend_widening_factor=widening_factor)

  def __call__(self, planes: jax.Array, *, is_training: bool) -> EncoderOutput:
    """planes [B, H, W, C] -> embedding [B, D], features [B, H, W, E]."""
    _check_planes(planes)
    batch, height, width, channels = planes.shape
    pos = blocks.FourierPositionEncoding(
        index_dims=(height, width), num_bands=self._num_bands)(batch)      # [B, HW, P]
    cells = jnp.reshape(planes, [batch, height * width, channels])         # [B, HW, C]
    # Content and position are embedded separately and added: each gets its own
    # fan-in scaled init, so a few content channels are not drowned by many
    # Fourier features at the start of training.
    x = (hk.Linear(self._num_channels, name='embed')(cells) +
         hk.Linear(self._num_channels, name='embed_position')(pos))       # [B, HW, C']
    z = self._encoder(x, self._encoder.latents(), is_training=is_training)  # [B, M, C']
    embedding = jax.nn.relu(hk.Linear(self._output_size, name='summary')(
        hk.Flatten()(z)))                                                  # [B, D]
    queries = hk.Linear(self._num_channels, name='query')(pos)             # [B, HW, C']
    decoded = blocks.CrossAttention(
        num_heads=1, widening_factor=self._widening_factor, shape_for_attn='q',
        use_query_residual=False, name='cell_decoder')(
            queries, z, is_training=is_training)                           # [B, HW, C']
    features = hk.Linear(self._cell_size, name='cell_out')(decoded)
    return EncoderOutput(embedding, jnp.reshape(
        features, [batch, height, width, self._cell_size]))


class MLPScalarEncoder(hk.Module):
  """An MLP over a flat vector."""

  def __init__(self, *, output_size: int, hidden_sizes: Sequence[int] = (64,),
               name: Optional[str] = None):
    super().__init__(name=name)
    self._sizes = tuple(hidden_sizes) + (output_size,)

  def __call__(self, scalars: jax.Array, *, is_training: bool) -> jax.Array:
    """scalars [B, S] -> [B, D]."""
    del is_training
    if scalars.ndim != 2:
      raise ValueError(f'scalars: expected [B, S], got shape {scalars.shape}.')
    return hk.nets.MLP(self._sizes, activate_final=True)(scalars)


ENTITY_ENCODERS: Mapping[str, Callable[..., Any]] = {
    'perceiver_io': PerceiverIOEntityEncoder,
    'transformer': TransformerEntityEncoder,
    'mlp': MLPEntityEncoder,
}
SPATIAL_ENCODERS: Mapping[str, Callable[..., Any]] = {
    'conv': ConvSpatialEncoder,
    'perceiver_io': PerceiverIOSpatialEncoder,
}
SCALAR_ENCODERS: Mapping[str, Callable[..., Any]] = {'mlp': MLPScalarEncoder}


def resolve(name: str, registry: Mapping[str, Callable[..., Any]], *,
            field: str) -> Callable[..., Any]:
  """The factory called `name` in `registry`, or imported from 'package.module:factory'."""
  if name in registry:
    return registry[name]
  if ':' in name:
    module_name, _, attr = name.partition(':')
    try:
      module = importlib.import_module(module_name)
    except ImportError as e:
      raise ValueError(f'{field}: cannot import {module_name!r} ({e}).') from None
    if not hasattr(module, attr):
      raise ValueError(f'{field}: module {module_name!r} has no {attr!r}.')
    return getattr(module, attr)
  raise ValueError(f'{field}: unknown encoder {name!r}; known: {sorted(registry)}, '
                   "or 'package.module:factory' for your own.")


def check_output(output: Any, *, batch: int, output_size: int,
                 features_shape: Optional[tuple], name: str) -> EncoderOutput:
  """Checks an encoder's output against the contract; raises ValueError naming `name`."""
  if not isinstance(output, EncoderOutput):
    raise ValueError(f'{name}: must return an EncoderOutput(embedding, features), got '
                     f'{type(output).__name__}.')
  if output.embedding.shape != (batch, output_size):
    raise ValueError(f'{name}: embedding must have shape {(batch, output_size)}, got '
                     f'{output.embedding.shape}.')
  if features_shape is not None:
    shape = None if output.features is None else output.features.shape
    if shape != features_shape:
      raise ValueError(f'{name}: features must have shape {features_shape}, got {shape}.')
  chex.assert_type(output.embedding, float)
  return output
