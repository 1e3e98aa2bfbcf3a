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
from typing import Any, Callable, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np


def check_chunk_size(chunk_size: Optional[int], *, name: str) -> None:
  """Raises ValueError unless `chunk_size` is None (no chunking) or a positive int."""
  if chunk_size is None:
    return
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
    raise ValueError(f'{name} must be a positive int or None, got {chunk_size!r}.')
  if chunk_size <= 0:
    raise ValueError(f'{name} must be positive (or None for no chunking), '
                     f'got {chunk_size}.')


def map_chunks(fn: Callable[[Any], Any], xs: Any, *,
               chunk_size: Optional[int]) -> Any:
  """Applies `fn` to chunks of at most `chunk_size` positions of axis 1 of `xs`.

  Args:
    fn: maps a pytree of [B, c, ...] arrays to a pytree of [B, c, ...] arrays, each
      output row depending only on the same input row. It may use Haiku modules (it
      runs under `hk.map`); modules it calls must be constructed outside it.
    xs: pytree of arrays [B, O, ...] sharing O (None leaves are allowed, e.g. no mask).
    chunk_size: at most this many positions per call of `fn`; None calls `fn` once on
      all of `xs`.
  Returns:
    `fn`'s outputs for all O positions, [B, O, ...] each. The last chunk is padded
    with zeros (False for masks) to length c; its padded rows are dropped.
  """
  check_chunk_size(chunk_size, name='chunk_size')
  leaves = jax.tree.leaves(xs)
  if not leaves:
    raise ValueError('map_chunks needs at least one array in xs.')
  lengths = {np.shape(x)[1] if np.ndim(x) >= 2 else None for x in leaves}
  if len(lengths) != 1 or None in lengths:
    raise ValueError('every array in xs must be [B, O, ...] with the same O, got '
                     f'shapes {[tuple(np.shape(x)) for x in leaves]}.')
  length = lengths.pop()
  if chunk_size is None or length <= chunk_size:
    return fn(xs)
  num_chunks = -(-length // chunk_size)
  padded = num_chunks * chunk_size

  def split(x):  # [B, O, ...] -> [n, B, c, ...]
    pad = [(0, 0)] * x.ndim
    pad[1] = (0, padded - length)
    x = jnp.pad(x, pad)  # zeros, or False for bool masks
    x = jnp.reshape(x, (x.shape[0], num_chunks, chunk_size) + x.shape[2:])
    return jnp.moveaxis(x, 1, 0)

  def merge(y):  # [n, B, c, ...] -> [B, O, ...]
    y = jnp.moveaxis(y, 0, 1)
    y = jnp.reshape(y, (y.shape[0], padded) + y.shape[3:])
    return y[:, :length]

  ys = hk.map(fn, jax.tree.map(split, xs))
  return jax.tree.map(merge, ys)
