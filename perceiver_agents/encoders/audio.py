"""Raw audio in and out: fixed-size patches of samples, with positions.

Shape letters: B batch, S samples, P samples per patch, N = S / P patches.
"""
from typing import Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_agents.blocks import checks
from perceiver_agents.encoders.positional import PositionalPreprocessor


class AudioPreprocessor(PositionalPreprocessor):
  """Cuts audio [B, S] or [B, S, 1] into patches [B, N, P] and adds positions."""

  def __init__(self, *, prep_type: str = 'patches', samples_per_patch: int = 96,
               position_encoding_type: str = 'fourier',
               n_extra_pos_mlp: int = 0, concat_or_add_pos: str = 'concat',
               project_pos_dim: int = -1,
               trainable_position_encoding_kwargs: Optional[dict] = None,
               fourier_position_encoding_kwargs: Optional[dict] = None,
               name: Optional[str] = None):
    super().__init__(
        position_encoding_type=position_encoding_type,
        project_pos_dim=project_pos_dim,
        trainable_position_encoding_kwargs=trainable_position_encoding_kwargs,
        fourier_position_encoding_kwargs=fourier_position_encoding_kwargs,
        n_extra_pos_mlp=n_extra_pos_mlp, concat_or_add_pos=concat_or_add_pos,
        name=name)
    checks.check_choice(prep_type, ('patches',), name='prep_type')
    checks.check_positive(samples_per_patch, name='samples_per_patch')
    self._samples_per_patch = samples_per_patch

  def __call__(self, inputs: jax.Array, *, is_training: bool,
               pos: Optional[jax.Array] = None):
    """Returns (patches with positions [B, N, P + C_pos], None, patches [B, N, P])."""
    samples = inputs.size // inputs.shape[0]
    if samples % self._samples_per_patch:
      raise ValueError(f'inputs hold {samples} samples per example, not a multiple '
                       f'of samples_per_patch={self._samples_per_patch}.')
    patches = jnp.reshape(inputs, [inputs.shape[0], -1, self._samples_per_patch])
    with_pos, without_pos = self._build_network_inputs(patches, pos)
    return with_pos, None, without_pos


class AudioPostprocessor(hk.Module):
  """Projects decoder outputs [B, N, C] to patches and flattens them to [B, N * P]."""

  def __init__(self, *, postproc_type: str = 'patches',
               samples_per_patch: int = 96, name: Optional[str] = None):
    super().__init__(name=name)
    checks.check_choice(postproc_type, ('patches',), name='postproc_type')
    self._samples_per_patch = samples_per_patch

  def __call__(self, inputs: jax.Array, *, is_training: bool,
               pos: Optional[jax.Array] = None, modality_sizes=None) -> jax.Array:
    out = hk.Linear(self._samples_per_patch)(inputs)  # [B, N, P]
    return jnp.reshape(out, [inputs.shape[0], -1])
