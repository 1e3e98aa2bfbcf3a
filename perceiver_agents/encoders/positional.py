"""The part every positional preprocessor shares: flatten, encode positions, combine."""
from typing import Any, Optional, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_agents.blocks import checks
from perceiver_agents.blocks.position import build_position_encoding


class PositionalPreprocessor(hk.Module):
  """Base of preprocessors that attach a position encoding to their features.

  Subclasses featurize their modality into [B, *index_dims, C] and call
  `_build_network_inputs`, which flattens the index dims and concatenates (or adds)
  the position encoding.

  `lazy_position_features` (Fourier, concatenated, unprojected encodings only) returns
  the inputs as a `position.LazyFourierFeatures` instead of an array: features
  [B, N, C] and positions [B, N, d] that the chunked consumers (decode_chunk_size,
  cross_attend_kv_chunk_size) expand to [B, N, C + P] one chunk at a time. Same
  parameters and values; [B, N, C + P] is then never alive in full.
  """

  def __init__(self, *, position_encoding_type: str = 'fourier',
               project_pos_dim: int = -1,
               trainable_position_encoding_kwargs: Optional[dict] = None,
               fourier_position_encoding_kwargs: Optional[dict] = None,
               n_extra_pos_mlp: int = 0, concat_or_add_pos: str = 'concat',
               lazy_position_features: bool = False,
               name: Optional[str] = None):
    super().__init__(name=name)
    checks.check_choice(position_encoding_type, ('trainable', 'fourier'),
                        name='position_encoding_type')
    checks.check_choice(concat_or_add_pos, ('concat', 'add'),
                        name='concat_or_add_pos')
    self._position_encoding_type = position_encoding_type
    self._position_encoding_kwargs = dict(
        project_pos_dim=project_pos_dim,
        trainable_position_encoding_kwargs=trainable_position_encoding_kwargs,
        fourier_position_encoding_kwargs=fourier_position_encoding_kwargs)
    self._n_extra_pos_mlp = n_extra_pos_mlp
    self._concat_or_add_pos = concat_or_add_pos
    self._lazy_position_features = bool(lazy_position_features)
    if self._lazy_position_features and (
        position_encoding_type != 'fourier' or concat_or_add_pos != 'concat'
        or project_pos_dim > 0 or n_extra_pos_mlp > 0):
      raise ValueError(
          'lazy_position_features needs a Fourier position encoding, concatenated, '
          'without projection or extra MLP; got position_encoding_type='
          f'{position_encoding_type!r}, concat_or_add_pos={concat_or_add_pos!r}, '
          f'project_pos_dim={project_pos_dim}, n_extra_pos_mlp={n_extra_pos_mlp}.')

  def _build_network_inputs(self, inputs: jax.Array, pos: Optional[jax.Array]
                            ) -> Tuple[Any, jax.Array]:
    """Maps features [B, *index_dims, C] to ([B, N, C + P] with positions, [B, N, C]).

    With lazy_position_features the first is a `LazyFourierFeatures` of that shape.
    """
    batch = inputs.shape[0]
    index_dims = inputs.shape[1:-1]
    inputs = jnp.reshape(inputs, [batch, int(np.prod(index_dims)), -1])
    encoding = build_position_encoding(
        self._position_encoding_type, index_dims=index_dims,
        **self._position_encoding_kwargs)
    if self._lazy_position_features:
      return encoding.lazy(inputs, pos=pos), inputs
    pos_enc = encoding(batch_size=batch, pos=pos)  # [B, N, P]
    for i in range(self._n_extra_pos_mlp):
      pos_enc = pos_enc + hk.Linear(pos_enc.shape[-1])(pos_enc)
      if i < self._n_extra_pos_mlp - 1:
        pos_enc = jax.nn.relu(pos_enc)
    if self._concat_or_add_pos == 'concat':
      with_pos = jnp.concatenate([inputs, pos_enc.astype(inputs.dtype)], axis=-1)
    else:
      if pos_enc.shape[-1] != inputs.shape[-1]:
        raise ValueError(f"concat_or_add_pos='add' needs the position encoding "
                         f'width {pos_enc.shape[-1]} to equal the feature width '
                         f'{inputs.shape[-1]}.')
      with_pos = inputs + pos_enc
    return with_pos, inputs
