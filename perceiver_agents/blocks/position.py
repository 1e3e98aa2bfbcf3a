"""Position encodings: trainable, Fourier, and a learned projection of either.

Shape letters: B batch, N positions (the product of the index dims), d number of
index dimensions, K Fourier bands, C channels, P Fourier channels.
"""
from typing import Optional, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_agents.blocks import checks
from perceiver_agents.blocks import ops

POSITION_ENCODING_TYPES = ('trainable', 'fourier')


def fourier_features(pos: jax.Array, *, num_bands: int,
                     max_resolution: Sequence[int], concat_pos: bool = True,
                     sine_only: bool = False) -> jax.Array:
  """Fourier features of positions with linearly spaced frequency bands.

  Band k of dimension i has frequency f_ik = linspace(1, max_resolution[i] / 2, K)[k]
  (up to the Nyquist frequency of that dimension), applied as sin(pi * f * x).

  Args:
    pos: [..., N, d] positions, each coordinate in [-1, 1].
    num_bands: K, bands per dimension.
    max_resolution: d sizes that set each dimension's highest band.
    concat_pos: prepend the raw positions.
    sine_only: only sin features (else sin features, then cos features).
  Returns:
    [..., N, d + 2 * d * K] ordered [pos, sin(dim 1 bands..., dim d bands...), cos(...)]
    (without the d raw positions if concat_pos=False, half the bands if sine_only).
  """
  if pos.shape[-1] != len(max_resolution):
    raise ValueError(f'max_resolution has {len(max_resolution)} dimensions but '
                     f'pos has {pos.shape[-1]}.')
  freqs = jnp.stack([jnp.linspace(1.0, res / 2, num=num_bands, endpoint=True)
                     for res in max_resolution], axis=0)  # [d, K]
  features = pos[..., :, None] * freqs  # [..., N, d, K]
  features = jnp.reshape(features, features.shape[:-2] + (-1,))  # [..., N, d*K]
  if sine_only:
    features = jnp.sin(jnp.pi * features)
  else:
    features = jnp.concatenate([jnp.sin(jnp.pi * features),
                                jnp.cos(jnp.pi * features)], axis=-1)
  if concat_pos:
    features = jnp.concatenate([pos, features], axis=-1)
  return features


def num_fourier_channels(num_dims: int, *, num_bands: int, concat_pos: bool = True,
                         sine_only: bool = False) -> int:
  """P, the width of `fourier_features` for d = num_dims coordinates."""
  return num_dims * num_bands * (1 if sine_only else 2) + (num_dims if concat_pos else 0)


@jax.tree_util.register_pytree_node_class
class LazyFourierFeatures:
  """Rows [B, N, C + P] = features, then Fourier features of positions: kept compact.

  Stands for `concatenate([features, fourier_features(positions).astype(features.dtype)],
  -1)` but holds only features [B, N, C] and positions [B, N, d] (P = 258 channels of
  the flow model's 322 become d = 2). `materialize` computes the rows. The expansion is
  position-wise, so materializing a slice along N gives the same slice of the rows:
  the chunked consumers (`chunking.map_chunks`, `chunking.attend_in_kv_chunks`, which
  slice every leaf of a pytree) expand one chunk at a time and [B, N, C + P] is never
  alive in full. A pytree whose leaves are (features, positions); `shape`, `ndim` and
  `dtype` describe the materialized rows, so shape checks read it like an array.
  Made by `FourierPositionEncoding.lazy`; a `protocols.LazyArray`: consumers call
  `protocols.materialize(x)`, which passes plain arrays through.
  """

  def __init__(self, features: jax.Array, positions: jax.Array, *, num_bands: int,
               max_resolution: Sequence[int], concat_pos: bool, sine_only: bool):
    # No checks here: jax rebuilds pytrees with placeholder leaves.
    self.features = features  # [B, N, C]
    self.positions = positions  # [B, N, d]
    self._config = dict(num_bands=num_bands, max_resolution=tuple(max_resolution),
                        concat_pos=concat_pos, sine_only=sine_only)

  @property
  def shape(self) -> Tuple[int, ...]:
    """[B, N, C + P], the shape of the materialized rows."""
    width = num_fourier_channels(
        len(self._config['max_resolution']), num_bands=self._config['num_bands'],
        concat_pos=self._config['concat_pos'], sine_only=self._config['sine_only'])
    return tuple(self.features.shape[:-1]) + (self.features.shape[-1] + width,)

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def dtype(self):
    return self.features.dtype

  def materialize(self) -> jax.Array:
    """The rows [B, N, C + P] (or of a chunk: [B, c, C + P] from [B, c, C], [B, c, d])."""
    pos_enc = fourier_features(self.positions, **self._config)  # [B, N, P]
    return jnp.concatenate([self.features, pos_enc.astype(self.features.dtype)],
                           axis=-1)

  def tree_flatten(self):
    return (self.features, self.positions), tuple(sorted(self._config.items()))

  @classmethod
  def tree_unflatten(cls, config, leaves):
    return cls(*leaves, **dict(config))


def linear_positions(index_dims: Sequence[int],
                     output_range: Tuple[float, float] = (-1.0, 1.0)
                     ) -> jax.Array:
  """Grid of evenly spaced coordinates, endpoints included.

  Returns [*index_dims, d] with coordinate i of each point in `output_range`.
  """
  axes = [jnp.linspace(output_range[0], output_range[1], num=n, endpoint=True,
                       dtype=jnp.float32) for n in index_dims]
  return jnp.stack(jnp.meshgrid(*axes, indexing='ij'), axis=-1)


def positions_of_indices(indices: jax.Array,
                         index_dims: Sequence[int]) -> jax.Array:
  """Coordinates of flat `indices` [n] into a grid of `index_dims`, as [n, d].

  Coordinate j maps index i_j to -1 + 2 * i_j / index_dims[j] (how subsampled output
  queries are placed by the published decoders).
  """
  pos = jnp.stack(jnp.unravel_index(indices, tuple(index_dims)), axis=1)
  return -1 + 2 * pos / jnp.array(index_dims)[None, :]


class TrainablePositionEncoding(hk.Module):
  """A learned [N, C] array, broadcast over the batch."""

  def __init__(self, *, index_dim: int, num_channels: int = 128,
               init_scale: float = 0.02, name: Optional[str] = None):
    super().__init__(name=name)
    checks.check_positive(int(index_dim), name='index_dim')
    checks.check_positive(num_channels, name='num_channels')
    self._index_dim = int(index_dim)
    self._num_channels = num_channels
    self._init_scale = init_scale

  def __call__(self, batch_size: Optional[int],
               pos: Optional[jax.Array] = None) -> jax.Array:
    """Returns [B, N, C], or [N, C] when batch_size is None. `pos` is ignored."""
    del pos  # A learned table has no notion of coordinates.
    embs = hk.get_parameter(
        'pos_embs', [self._index_dim, self._num_channels],
        init=hk.initializers.TruncatedNormal(stddev=self._init_scale))
    if batch_size is None:
      return embs
    return ops.broadcast_batch(embs, batch_size)


class FourierPositionEncoding(hk.Module):
  """Fourier features of a grid of `index_dims` (or of given positions)."""

  def __init__(self, *, index_dims: Sequence[int], num_bands: int,
               concat_pos: bool = True,
               max_resolution: Optional[Sequence[int]] = None,
               sine_only: bool = False, name: Optional[str] = None):
    super().__init__(name=name)
    checks.check_positive(num_bands, name='num_bands')
    self._index_dims = tuple(index_dims)
    self._num_bands = num_bands
    self._concat_pos = concat_pos
    self._sine_only = sine_only
    self._max_resolution = tuple(max_resolution or index_dims)
    if len(self._max_resolution) != len(self._index_dims):
      raise ValueError(f'max_resolution {self._max_resolution} must have one '
                       f'entry per index dim {self._index_dims}.')

  def _positions(self, batch_size: int, pos: Optional[jax.Array]) -> jax.Array:
    """[B, N, d]: `pos`, or the default grid broadcast over the batch."""
    if pos is None:
      pos = linear_positions(self._index_dims)
      pos = jnp.reshape(pos, [1, -1, len(self._index_dims)])
      return jnp.broadcast_to(pos, (batch_size,) + pos.shape[1:])
    if pos.shape[-1] != len(self._index_dims):
      raise ValueError(f'pos has {pos.shape[-1]} coordinates per point, but the '
                       f'encoding has {len(self._index_dims)} index dims.')
    return pos

  def _config(self) -> dict:
    return dict(num_bands=self._num_bands, max_resolution=self._max_resolution,
                concat_pos=self._concat_pos, sine_only=self._sine_only)

  def __call__(self, batch_size: int,
               pos: Optional[jax.Array] = None) -> jax.Array:
    """Returns [B, N, C]; `pos` [B, N, d] overrides the default grid."""
    return fourier_features(self._positions(batch_size, pos), **self._config())

  def lazy(self, features: jax.Array,
           pos: Optional[jax.Array] = None) -> LazyFourierFeatures:
    """`features` [B, N, C] concatenated with this encoding, [B, N, C + P], unexpanded.

    Materializes to `concatenate([features, self(B, pos).astype(features.dtype)], -1)`
    exactly (the same operations on the same positions), chunk by chunk if sliced.
    """
    checks.check_rank(features, 3, name='features')
    positions = self._positions(features.shape[0], pos)  # [B, N, d]
    if positions.shape[:2] != features.shape[:2]:
      raise ValueError(f'features {tuple(features.shape)} and positions '
                       f'{tuple(positions.shape)} disagree on [B, N].')
    return LazyFourierFeatures(features, positions, **self._config())


class PositionEncodingProjector(hk.Module):
  """Projects another position encoding to `output_size` channels."""

  def __init__(self, *, output_size: int, base_position_encoding: hk.Module,
               name: Optional[str] = None):
    super().__init__(name=name)
    self._output_size = output_size
    self._base = base_position_encoding

  def __call__(self, batch_size: int,
               pos: Optional[jax.Array] = None) -> jax.Array:
    """Returns [B, N, output_size]."""
    if pos is not None:  # Positions per example: project each example's own.
      return ops.Linear(self._output_size)(self._base(batch_size, pos))
    # The default grid is the same for every example: project it once, then broadcast
    # (projecting B copies cost B times the work forward and backward).
    projected = ops.Linear(self._output_size)(self._base(1))  # [1, N, out]
    return ops.broadcast_batch(projected[0], batch_size)


def build_position_encoding(
    position_encoding_type: str, *, index_dims: Sequence[int],
    project_pos_dim: int = -1,
    trainable_position_encoding_kwargs: Optional[dict] = None,
    fourier_position_encoding_kwargs: Optional[dict] = None,
    name: Optional[str] = None) -> hk.Module:
  """Builds a 'trainable' or 'fourier' encoding, projected if project_pos_dim > 0."""
  checks.check_choice(position_encoding_type, POSITION_ENCODING_TYPES,
                      name='position_encoding_type')
  if position_encoding_type == 'trainable':
    if trainable_position_encoding_kwargs is None:
      raise ValueError('trainable_position_encoding_kwargs is required for '
                       "position_encoding_type='trainable'.")
    encoding = TrainablePositionEncoding(
        index_dim=int(np.prod(index_dims)), name=name,
        **trainable_position_encoding_kwargs)
  else:
    if fourier_position_encoding_kwargs is None:
      raise ValueError('fourier_position_encoding_kwargs is required for '
                       "position_encoding_type='fourier'.")
    encoding = FourierPositionEncoding(
        index_dims=index_dims, name=name, **fourier_position_encoding_kwargs)
  if project_pos_dim > 0:
    encoding = PositionEncodingProjector(output_size=project_pos_dim,
                                         base_position_encoding=encoding)
  return encoding
