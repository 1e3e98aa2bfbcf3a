"""Simple adapters: one-hot inputs, and linear heads on decoder outputs."""
from typing import Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_agents.blocks import checks
from perceiver_agents.blocks import ops


class OneHotPreprocessor(hk.Module):
  """Treats a vector [B, C] (e.g. a one-hot label) as a single input token [B, 1, C]."""

  def __call__(self, inputs: jax.Array, *, is_training: bool,
               pos: Optional[jax.Array] = None):
    checks.check_rank(inputs, 2, name='inputs')
    inputs = inputs[:, None, :]
    return inputs, None, inputs


class ClassificationPostprocessor(hk.Module):
  """Logits [B, num_classes] from the first decoder output [B, O, C]."""

  def __init__(self, *, num_classes: int, name: Optional[str] = None):
    super().__init__(name=name)
    checks.check_positive(num_classes, name='num_classes')
    self._num_classes = num_classes

  def __call__(self, inputs: jax.Array, *, is_training: bool,
               pos: Optional[jax.Array] = None, modality_sizes=None) -> jax.Array:
    return hk.Linear(self._num_classes)(inputs)[:, 0, :]


class ProjectionPostprocessor(hk.Module):
  """A linear map of every decoder output: [B, O, C] -> [B, O, num_outputs]."""

  position_wise = True  # row o of the output depends on input row o only

  def __init__(self, *, num_outputs: int, name: Optional[str] = None):
    super().__init__(name=name)
    self._num_outputs = num_outputs

  def __call__(self, inputs: jax.Array, *, is_training: bool,
               pos: Optional[jax.Array] = None, modality_sizes=None) -> jax.Array:
    return hk.Linear(self._num_outputs)(inputs)


class IdentityPostprocessor(hk.Module):
  """Passes decoder outputs through unchanged."""

  position_wise = True  # row o of the output depends on input row o only

  def __call__(self, inputs, *, is_training: bool, pos=None, modality_sizes=None):
    return inputs


class EmbeddingDecoder(hk.Module):
  """Output logits tied to an input embedding: x @ E^T + b, [B, T, D] -> [B, T, V]."""

  def __init__(self, *, embedding_matrix: jax.Array,
               name: str = 'embedding_decoder'):
    super().__init__(name=name)
    checks.check_rank(embedding_matrix, 2, name='embedding_matrix')
    self._embedding_matrix = embedding_matrix
    self._vocab_size, self._d_model = embedding_matrix.shape

  def __call__(self, embeddings: jax.Array) -> jax.Array:
    checks.check_rank(embeddings, 3, name='embeddings')
    if embeddings.shape[-1] != self._d_model:
      raise ValueError(f'embeddings have {embeddings.shape[-1]} channels, the '
                       f'embedding matrix has {self._d_model}.')
    bias = hk.get_parameter('bias', [self._vocab_size], init=jnp.zeros)
    batch, length, _ = embeddings.shape
    # Logits in (at least) float32: for bfloat16 embeddings, the product's float32
    # accumulation, not rounded to bfloat16 before the loss.
    logits = ops.einsum('rd,vd->rv', embeddings.reshape(batch * length, self._d_model),
                        self._embedding_matrix)  # [B * T, V]
    dtype = jnp.promote_types(embeddings.dtype, jnp.float32)
    return logits.reshape(batch, length, self._vocab_size).astype(dtype) + bias
