"""Several modalities through one Perceiver: pad to a common width, mask, concatenate."""
from typing import Mapping, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_agents.blocks.decoders import split_modalities
from perceiver_agents.blocks.position import TrainablePositionEncoding


class MultimodalPreprocessor(hk.Module):
  """Preprocesses each modality, pads to a common width, concatenates by name.

  Each modality's tokens [B, N_m, C_m] are padded with a learned vector to
  max_m(C_m) + `min_padding_size` channels. With `mask_probs`, each token of modality
  m is replaced by a learned mask token with probability mask_probs[m] (probabilities
  0 and 1 need no random key). Returns ([B, sum N_m, C], {m: N_m}, {m: unpadded}).
  """

  def __init__(self, *, modalities: Mapping[str, hk.Module],
               mask_probs: Optional[Mapping[str, float]] = None,
               min_padding_size: int = 2, name: Optional[str] = None):
    super().__init__(name=name)
    if not modalities:
      raise ValueError('modalities must name at least one preprocessor.')
    if mask_probs is not None:
      missing = set(modalities) - set(mask_probs)
      if missing:
        raise ValueError(f'mask_probs lacks modalities {sorted(missing)}.')
      for m, p in mask_probs.items():
        if not 0.0 <= p <= 1.0:
          raise ValueError(f'mask_probs[{m!r}] must be in [0, 1], got {p}.')
    self._modalities = dict(modalities)
    self._mask_probs = mask_probs
    self._min_padding_size = min_padding_size

  def __call__(self, inputs: Mapping[str, jax.Array], *, is_training: bool,
               pos: Optional[jax.Array] = None):
    missing = set(self._modalities) - set(inputs)
    if missing:
      raise ValueError(f'inputs lack modalities {sorted(missing)}.')
    outputs, without_pos = {}, {}
    for m, preprocessor in self._modalities.items():
      outputs[m], _, without_pos[m] = preprocessor(
          inputs[m], is_training=is_training, pos=pos)
    width = max(o.shape[2] for o in outputs.values()) + self._min_padding_size
    padded, sizes = {}, {}
    for m, output in outputs.items():
      batch, length, channels = output.shape
      padding = TrainablePositionEncoding(
          index_dim=1, num_channels=width - channels, init_scale=0.02,
          name=f'{m}_padding')(batch)  # [B, 1, width - C_m]
      padding = jnp.broadcast_to(padding, (batch, length, width - channels))
      x = jnp.concatenate([output, padding], axis=2)  # [B, N_m, width]
      if self._mask_probs is not None:
        mask_token = TrainablePositionEncoding(
            index_dim=1, num_channels=width, init_scale=0.02,
            name=f'{m}_mask_token')(batch)  # [B, 1, width]
        x = self._mask(x, mask_token, self._mask_probs[m])
      padded[m] = x
      sizes[m] = length
    tokens = jnp.concatenate([padded[m] for m in sorted(padded)], axis=1)
    return tokens, sizes, without_pos

  @staticmethod
  def _mask(x: jax.Array, mask_token: jax.Array, prob: float) -> jax.Array:
    if prob == 0.0:
      return x
    if prob == 1.0:
      return jnp.broadcast_to(mask_token, x.shape)
    mask = jax.random.bernoulli(hk.next_rng_key(), prob, x.shape[:2])[..., None]
    return jnp.where(mask, mask_token, x)


class MultimodalPostprocessor(hk.Module):
  """Splits decoder outputs by modality and postprocesses each one."""

  def __init__(self, *, modalities: Mapping[str, hk.Module],
               input_is_dict: bool = False, name: Optional[str] = None):
    super().__init__(name=name)
    self._modalities = dict(modalities)
    self._input_is_dict = input_is_dict

  @property
  def modalities(self) -> Mapping[str, hk.Module]:
    """{modality: postprocessor} (a chunked MultimodalDecoder applies them itself)."""
    return dict(self._modalities)

  def __call__(self, inputs, *, is_training: bool,
               pos: Optional[jax.Array] = None, modality_sizes=None) -> dict:
    if not self._input_is_dict:
      if modality_sizes is None:
        raise ValueError('modality_sizes is required to split a flat input.')
      inputs = split_modalities(modality_sizes, inputs)
    return {m: post(inputs[m], is_training=is_training, pos=pos)
            for m, post in self._modalities.items()}
