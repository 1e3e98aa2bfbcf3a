"""Chunked evaluation of position-wise computations over a long query axis.

Cross-attention is independent per query: query row o of the output depends only on
query row o (and on all keys). Decoding O queries therefore needs only one chunk's
attention logits [B, H, chunk, K] and MLP activations alive at a time, instead of
[B, H, O, K]: `map_chunks` pads the query axis to a multiple of the chunk size, runs
the computation on one chunk after another (`hk.map`, a `lax.scan`, so XLA reuses one
chunk's buffers) and slices the padding off again. Each output row is computed by the
same operations as without chunking.

Shape letters: B batch, O positions along the chunked axis, c chunk size, n = ceil(O / c)
chunks.
"""
import math
from typing import Any, Callable, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_agents.blocks import masking


def check_chunk_size(chunk_size: Optional[int], *, name: str) -> None:
  """Raises ValueError unless `chunk_size` is None (no chunking) or a positive int."""
  if chunk_size is None:
    return
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
    raise ValueError(f'{name} must be a positive int or None, got {chunk_size!r}.')
  if chunk_size <= 0:
    raise ValueError(f'{name} must be positive (or None for no chunking), '
                     f'got {chunk_size}.')


def _chunk_starts(length: int, chunk_size: int) -> jax.Array:
  """Start of each chunk; the last one is moved back to end at `length` (overlapping
  its predecessor) so every chunk is a full in-bounds slice: no padded copy."""
  num_chunks = -(-length // chunk_size)
  return jnp.minimum(jnp.arange(num_chunks) * chunk_size, length - chunk_size)


def _slice(x, start, chunk_size: int, axis: int):
  return jax.lax.dynamic_slice_in_dim(x, start, chunk_size, axis=axis)


def map_chunks(fn: Callable[[Any], Any], xs: Any, *,
               chunk_size: Optional[int]) -> Any:
  """Applies `fn` to chunks of at most `chunk_size` positions of axis 1 of `xs`.

  Args:
    fn: maps a pytree of [B, c, ...] arrays to a pytree of [B, c, ...] arrays, each
      output row depending only on the same input row. It may use Haiku modules (it
      runs under `hk.scan`); modules it calls must be constructed outside it.
    xs: pytree of arrays [B, O, ...] sharing O (None leaves are allowed, e.g. no mask).
      A leaf [B, 1, ...] is the same for every position (e.g. a padding vector
      broadcast along O): every chunk gets it whole.
    chunk_size: at most this many positions per call of `fn`; None calls `fn` once on
      all of `xs`.
  Returns:
    `fn`'s outputs for all O positions, [B, O, ...] each. Chunks are slices of `xs`
    (no padded or transposed copy of it); when c does not divide O, the last chunk ends
    at O and overlaps the one before, whose rows it recomputes identically.
  """
  check_chunk_size(chunk_size, name='chunk_size')
  leaves = jax.tree.leaves(xs)
  if not leaves:
    raise ValueError('map_chunks needs at least one array in xs.')
  lengths = {np.shape(x)[1] if np.ndim(x) >= 2 else None for x in leaves}
  if None in lengths or len(lengths - {1}) > 1:
    raise ValueError('every array in xs must be [B, O, ...] with the same O (or '
                     f'[B, 1, ...]), got shapes {[tuple(np.shape(x)) for x in leaves]}.')
  length = max(lengths)
  if chunk_size is None or length <= chunk_size:
    return fn(xs)
  starts = _chunk_starts(length, chunk_size)
  take = lambda start: jax.tree.map(
      lambda x: x if x.shape[1] == 1 else _slice(x, start, chunk_size, 1), xs)
  # The first chunk runs outside the loop: it gives the output shapes (and creates
  # the parameters during init).
  first = fn(take(0))
  outputs = jax.tree.map(
      lambda y: jnp.zeros((y.shape[0], length) + y.shape[2:], y.dtype), first)
  outputs = jax.tree.map(
      lambda o, y: jax.lax.dynamic_update_slice_in_dim(o, y, 0, axis=1), outputs, first)

  def step(outputs, start):
    ys = fn(take(start))
    return jax.tree.map(
        lambda o, y: jax.lax.dynamic_update_slice_in_dim(o, y, start, axis=1),
        outputs, ys), None

  outputs, _ = hk.scan(step, outputs, starts[1:])
  return outputs


def attend_in_kv_chunks(q: jax.Array, inputs_kv: Any,
                        project_kv: Callable[[jax.Array], Any], *,
                        value_dim: int, chunk_size: int,
                        attention_mask: Optional[jax.Array] = None) -> jax.Array:
  """Scaled dot-product attention over chunks of the keys (online softmax).

  For a long key axis (a cross-attention into N inputs): keys and values are projected
  and attended one chunk of positions at a time, keeping a running maximum, softmax
  denominator and weighted sum per query, so neither the keys and values [B, K, H, D]
  nor the logits [B, H, Q, K] are ever alive in full. The result equals `attend` up to
  float rounding (the softmax sum is accumulated chunk by chunk).

  Args:
    q: [B, Q, H, Dqk] queries.
    inputs_kv: [B, K, C] key/value inputs (before projection), or a pytree of
      [B, K, ...] arrays with a `shape` [B, K, C] (e.g. a position.LazyFourierFeatures,
      expanded by `project_kv` one chunk at a time); every leaf is sliced along K.
    project_kv: maps inputs [B, c, C] (or the pytree of [B, c, ...] slices) to
      (keys [B, c, H, Dqk], values [B, c, H, Dv]); may use Haiku modules constructed
      outside it.
    value_dim: Dv, the per-head value width `project_kv` returns.
    chunk_size: at most this many key positions at a time.
    attention_mask: optional [B, Q, K], truthy where attention is allowed.
  Returns:
    [B, Q, H * Dv]. Query rows whose keys are all masked are exactly zero.
  """
  check_chunk_size(chunk_size, name='kv_chunk_size')
  if chunk_size is None:
    raise ValueError('kv_chunk_size must be a positive int, got None.')
  batch, q_len, heads, qk_dim = q.shape
  kv_len = inputs_kv.shape[1]
  chunk_size = min(chunk_size, kv_len)
  num_chunks = -(-kv_len // chunk_size)
  # Chunks are slices of inputs_kv; the last one ends at K, and the positions it
  # shares with the chunk before are masked so that each key counts once.
  ends = jnp.arange(1, num_chunks + 1) * chunk_size  # [n]
  q = jnp.swapaxes(q, 1, 2)  # [B, H, Q, Dqk]
  scale = 1.0 / math.sqrt(qk_dim)
  # Products accumulate, and the softmax runs, in float32 for bfloat16 queries.
  acc = jnp.promote_types(q.dtype, jnp.float32)

  def step(carry, end):
    running_max, denominator, total = carry  # [B, H, Q], [B, H, Q], [B, H, Q, Dv]
    start = jnp.minimum(end, kv_len) - chunk_size
    chunk = jax.tree.map(lambda x: _slice(x, start, chunk_size, 1), inputs_kv)
    k, v = project_kv(chunk)  # [B, c, H, D*]
    logits = jnp.einsum('bhqd,bkhd->bhqk', q, k,
                        preferred_element_type=acc) * scale  # [B, H, Q, c]
    fresh = start + jnp.arange(chunk_size) >= end - chunk_size  # [c]
    allowed = fresh[None, None, None, :]
    if attention_mask is not None:
      allowed = allowed & _slice(attention_mask.astype(bool), start, chunk_size,
                                 2)[:, None]
    logits = masking.mask_logits(logits, allowed)
    new_max = jnp.maximum(running_max, jnp.max(logits, axis=-1))
    weights = jnp.exp(logits - new_max[..., None])  # [B, H, Q, c]
    correction = jnp.exp(running_max - new_max)  # [B, H, Q]
    denominator = denominator * correction + jnp.sum(weights, axis=-1)
    total = (total * correction[..., None]
             + jnp.einsum('bhqk,bkhd->bhqd', weights.astype(v.dtype), v,
                          preferred_element_type=acc))
    return (new_max, denominator, total), None

  v_dim = value_dim
  init = (jnp.full((batch, heads, q_len), -jnp.inf, acc),
          jnp.zeros((batch, heads, q_len), acc),
          jnp.zeros((batch, heads, q_len, v_dim), acc))
  (_, denominator, total), _ = hk.scan(step, init, ends)
  out = (total / denominator[..., None]).astype(q.dtype)  # [B, H, Q, Dv]
  out = jnp.reshape(jnp.swapaxes(out, 1, 2), [batch, q_len, heads * v_dim])
  return masking.zero_empty_rows(out, attention_mask)
