"""Attention building blocks: masked multi-head attention, MLP, self- and cross-attention.

Shape letters used throughout:
  B: batch size.   Q: number of query positions.   K: number of key/value positions.
  C: channels.     H: attention heads.             D: channels per head.

Dense layers, LayerNorms, the attention products and the residual boundaries are
blocks/ops.py's (the seam to perceiver_agents/kernels). All blocks are pre-LayerNorm (eps 1e-5) residual blocks with biased Q/K/V/output
projections, the scaled dot-product scale 1/sqrt(D_qk), tanh-approximate GELU in the MLP,
and masked logits set to -1e30 (rows whose every key is masked give zeros, never NaN).
These are the conventions of DeepMind's published Perceiver IO models, which
`perceiver_agents.zoo` reproduces exactly.
"""
import math
from typing import Callable, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_agents.blocks import checks
from perceiver_agents.blocks import chunking
from perceiver_agents.blocks import masking
from perceiver_agents.blocks import ops
from perceiver_agents.blocks import protocols
from perceiver_agents.blocks.ops import layer_norm
from perceiver_agents.blocks.ops import linear


def make_cross_attention_mask(query_mask: jax.Array,
                              kv_mask: jax.Array) -> jax.Array:
  """Builds an attention mask from per-position validity masks.

  Args:
    query_mask: [B, Q], truthy where the query position is valid.
    kv_mask: [B, K], truthy where the key/value position is valid.
  Returns:
    [B, Q, K] bool, True where query q may attend to key k.
  """
  checks.check_rank(query_mask, 2, name='query_mask')
  checks.check_rank(kv_mask, 2, name='kv_mask')
  if query_mask.shape[0] != kv_mask.shape[0]:
    raise ValueError(f'query_mask batch {query_mask.shape[0]} does not match '
                     f'kv_mask batch {kv_mask.shape[0]}.')
  return (query_mask.astype(bool)[:, :, None] &
          kv_mask.astype(bool)[:, None, :])


IMPLEMENTATIONS = ('auto', 'xla', 'dot_product_attention', 'cudnn')


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *,
           dropout_prob: float = 0.0,
           attention_mask: Optional[jax.Array] = None,
           implementation: str = 'auto') -> jax.Array:
  """Scaled dot-product attention over several heads.

  Args:
    q: [B, Q, H, Dqk] queries.
    k: [B, K, H, Dqk] keys.
    v: [B, K, H, Dv] values.
    dropout_prob: dropout rate on the attention probabilities (needs an RNG key
      when positive).
    attention_mask: optional [B, Q, K], truthy where attention is allowed.
    implementation: 'xla' (the heads-major batched matmuls below);
      'dot_product_attention' (`jax.nn.dot_product_attention`, letting JAX pick its
      kernel); 'cudnn' (the same, forcing cuDNN's fused flash attention: GPU,
      float16/bfloat16, head width a multiple of 8 up to 128, 256 on Hopper); 'auto'
      is 'cudnn' on a GPU in half precision where cuDNN takes the call (JAX checks
      its conditions when tracing; otherwise 'xla'), else 'xla': cuDNN is the fastest
      in half precision on a GPU, the XLA path in float32 and on CPU (measured by
      benchmarks/attention_kernels.py, BENCHMARKS.md). The last three need
      Dqk == Dv and no dropout.
  Returns:
    [B, Q, H * Dv]. Query rows whose keys are all masked are exactly zero, whichever
    implementation runs.
  """
  checks.check_choice(implementation, IMPLEMENTATIONS, name='implementation')
  batch, q_len, heads, qk_dim = q.shape
  v_dim = v.shape[-1]
  if implementation == 'auto':
    if _cudnn_may_apply(q, k, v, dropout_prob):
      try:
        return _fused(q, k, v, attention_mask, 'cudnn')
      except (NotImplementedError, RuntimeError, ValueError):
        pass  # cuDNN refused this call (version, shape, device): XLA's path below.
  elif implementation in ('dot_product_attention', 'cudnn'):
    if qk_dim != v_dim or dropout_prob > 0:
      raise ValueError(f'implementation={implementation} needs equal query/key and '
                       f'value head widths (got {qk_dim} and {v_dim}) and no dropout '
                       f'(got {dropout_prob}).')
    return _fused(q, k, v, attention_mask, implementation)
  logits = ops.attention_logits(q * (1.0 / math.sqrt(qk_dim)), k)  # [B, H, Q, K]
  if attention_mask is not None:
    logits = masking.mask_logits(logits, attention_mask[:, None, :, :])
  # softmax(logits) @ v, normalised after the product: the division then runs over
  # [B, Q, H, Dv] instead of [B, H, Q, K] (and dropout commutes with it).
  logits_max = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  unnormalised = jnp.exp(logits - logits_max)  # [B, H, Q, K]
  total = jnp.sum(unnormalised, axis=-1, keepdims=True)  # [B, H, Q, 1]
  unnormalised = ops.dropout(unnormalised, dropout_prob, is_training=True)
  out = ops.attention_values(unnormalised.astype(v.dtype), v)  # [B, Q, H, Dv]
  out = (out / jnp.swapaxes(total, 1, 2)).astype(v.dtype)
  out = jnp.reshape(out, [batch, q_len, heads * v_dim])
  return masking.zero_empty_rows(out, attention_mask)


def _cudnn_may_apply(q: jax.Array, k: jax.Array, v: jax.Array,
                     dropout_prob: float) -> bool:
  """Whether 'auto' tries cuDNN: a GPU, half precision, Dqk == Dv, no dropout."""
  half = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  return (jax.default_backend() == 'gpu' and jnp.dtype(q.dtype) in half and
          q.dtype == k.dtype == v.dtype and q.shape[-1] == v.shape[-1] and
          dropout_prob == 0)


def _fused(q, k, v, attention_mask, implementation: str) -> jax.Array:
  """`jax.nn.dot_product_attention` ('cudnn': forced) with attend's empty-row zeros."""
  batch, q_len, heads, v_dim = v.shape[0], q.shape[1], q.shape[2], v.shape[-1]
  mask = None if attention_mask is None else attention_mask.astype(bool)[:, None]
  out = jax.nn.dot_product_attention(
      q, k, v, mask=mask,
      implementation='cudnn' if implementation == 'cudnn' else None)
  return masking.zero_empty_rows(out.reshape(batch, q_len, heads * v_dim),
                                 attention_mask)


class Attention(hk.Module):
  """Multi-head attention with learned Q, K, V and output projections.

  Widths default from the query input: qk_channels = C_q, v_channels = qk_channels,
  output_channels = v_channels.
  """

  def __init__(self, *, num_heads: int = 8, init_scale: float = 1.0,
               with_final_bias: bool = True,
               final_init_scale_multiplier: float = 1.0,
               dropout_prob: float = 0.0,
               qk_channels: Optional[int] = None,
               v_channels: Optional[int] = None,
               output_channels: Optional[int] = None,
               query_chunk_size: Optional[int] = None,
               kv_chunk_size: Optional[int] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    checks.check_positive(num_heads, name='num_heads')
    chunking.check_chunk_size(query_chunk_size, name='query_chunk_size')
    chunking.check_chunk_size(kv_chunk_size, name='kv_chunk_size')
    if query_chunk_size is not None and kv_chunk_size is not None:
      raise ValueError('set at most one of query_chunk_size '
                       f'({query_chunk_size}) and kv_chunk_size ({kv_chunk_size}).')
    self._num_heads = num_heads
    self._query_chunk_size = query_chunk_size
    self._kv_chunk_size = kv_chunk_size
    self._init_scale = init_scale
    self._with_final_bias = with_final_bias
    self._final_init_scale = final_init_scale_multiplier * init_scale
    self._dropout_prob = dropout_prob
    self._qk_channels = qk_channels
    self._v_channels = v_channels
    self._output_channels = output_channels

  def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array, *,
               attention_mask: Optional[jax.Array] = None,
               kv_transform: Optional[Callable[[jax.Array], jax.Array]] = None
               ) -> jax.Array:
    """Attends from `inputs_q` [B, Q, Cq] to `inputs_kv` [B, K, Ckv].

    `inputs_q` may also be [Q, Cq], the same queries for every example: they are
    projected once, then broadcast over the batch (same values, 1/B of the work).
    `inputs_kv` may be a protocols.LazyArray. `attention_mask` is an optional
    [B, Q, K] mask. `kv_transform` (position-wise, e.g. a LayerNorm) is applied to
    `inputs_kv` before the key/value projections (with kv_chunk_size, one chunk at a
    time). Returns [B, Q, output_channels].
    """
    checks.check_rank(inputs_kv, 3, name='inputs_kv')
    checks.check_floating(inputs_kv, name='inputs_kv')
    batch, kv_len, _ = inputs_kv.shape
    q_len = _check_queries(inputs_q, batch)
    if attention_mask is not None:
      checks.check_mask(attention_mask, (batch, q_len, kv_len),
                        name='attention_mask')
    qk_channels = self._qk_channels or inputs_q.shape[-1]
    v_channels = self._v_channels or qk_channels
    output_channels = self._output_channels or v_channels
    checks.check_divisible(qk_channels, self._num_heads, name='qk_channels')
    checks.check_divisible(v_channels, self._num_heads, name='v_channels')
    heads = self._num_heads
    q_proj, k_proj, v_proj = (linear(width, init_scale=self._init_scale)
                              for width in (qk_channels, qk_channels, v_channels))
    out_proj = linear(output_channels, with_bias=self._with_final_bias,
                      init_scale=self._final_init_scale)

    q = q_proj(inputs_q)  # [(B,) Q, Cqk]
    if q.ndim == 2:
      q = ops.broadcast_batch(q, batch)  # [B, Q, Cqk]
    q = jnp.reshape(q, [batch, q_len, heads, qk_channels // heads])

    def keys_values(x):  # [B, c, Ckv] (or lazy) -> [B, c, H, Dqk], [B, c, H, Dv]
      x = protocols.materialize(x)
      if kv_transform is not None:
        x = kv_transform(x)
      c = x.shape[1]
      return (jnp.reshape(k_proj(x), [batch, c, heads, qk_channels // heads]),
              jnp.reshape(v_proj(x), [batch, c, heads, v_channels // heads]))

    if self._kv_chunk_size is not None:
      out = _attend_in_kv_chunks(q, inputs_kv, keys_values,
                                 value_dim=v_channels // heads,
                                 chunk_size=self._kv_chunk_size,
                                 dropout_prob=self._dropout_prob,
                                 attention_mask=attention_mask)  # [B, Q, Cv]
    else:
      k, v = keys_values(inputs_kv)
      out = _attend_in_query_chunks(q, k, v, chunk_size=self._query_chunk_size,
                                    dropout_prob=self._dropout_prob,
                                    attention_mask=attention_mask)  # [B, Q, Cv]
    return out_proj(out)  # [B, Q, Cout]


def _attend_in_query_chunks(q, k, v, *, chunk_size, dropout_prob, attention_mask):
  """`attend(q, k, v)` [B, Q, H * Dv], at most `chunk_size` query rows at a time.

  Query rows attend independently, so only one chunk's logits [B, H, chunk, K] are
  alive at a time (same values, less memory); None attends all rows at once.
  """
  return chunking.map_chunks(
      lambda c: attend(c['q'], k, v, dropout_prob=dropout_prob,
                       attention_mask=c['mask']),
      {'q': q, 'mask': attention_mask}, chunk_size=chunk_size)


def _attend_in_kv_chunks(q, inputs_kv, keys_values, *, value_dim, chunk_size,
                         dropout_prob, attention_mask):
  """Attention of q [B, Q, H, Dqk] over `inputs_kv` projected by `keys_values`
  `chunk_size` positions at a time (chunking.attend_in_kv_chunks) -> [B, Q, H * Dv]."""
  if dropout_prob > 0:
    raise ValueError('kv_chunk_size does not support attention dropout '
                     f'(dropout_prob={dropout_prob}); use query_chunk_size.')
  return chunking.attend_in_kv_chunks(q, inputs_kv, keys_values, value_dim=value_dim,
                                      chunk_size=chunk_size,
                                      attention_mask=attention_mask)


def _check_queries(inputs_q: jax.Array, batch: int) -> int:
  """Checks queries [B, Q, C] (or [Q, C], shared by the batch); returns Q."""
  if inputs_q.ndim not in (2, 3):
    raise ValueError(f'inputs_q must be [B, Q, C] or [Q, C] (shared by every '
                     f'example), got shape {tuple(inputs_q.shape)}.')
  if inputs_q.ndim == 3 and inputs_q.shape[0] != batch:
    raise ValueError(f'inputs_kv batch {batch} does not match inputs_q '
                     f'batch {inputs_q.shape[0]}.')
  checks.check_floating(inputs_q, name='inputs_q')
  return inputs_q.shape[-2]


class MLP(hk.Module):
  """Transformer feed-forward block: Linear(widening * C) -> GELU -> Linear(C)."""

  def __init__(self, *, widening_factor: int = 4, dropout_prob: float = 0.0,
               init_scale: float = 1.0, name: Optional[str] = None):
    super().__init__(name=name)
    checks.check_positive(widening_factor, name='widening_factor')
    self._widening_factor = widening_factor
    self._dropout_prob = dropout_prob
    self._init_scale = init_scale

  def __call__(self, x: jax.Array, *, is_training: bool) -> jax.Array:
    """Maps [B, N, C] to [B, N, C]."""
    channels, dtype = x.shape[-1], x.dtype
    # The activation reads the float32 accumulation (bfloat16 compute: one rounding).
    x = linear(self._widening_factor * channels, init_scale=self._init_scale,
               float32_output=True)(x)
    x = ops.gelu(x).astype(dtype)  # tanh approximation, as published (exact_gelu: erf)
    x = linear(channels, init_scale=self._init_scale)(x)
    return ops.dropout(x, self._dropout_prob, is_training=is_training)


class SelfAttention(hk.Module):
  """Pre-LayerNorm self-attention followed by an MLP, each with a residual."""

  def __init__(self, *, widening_factor: int = 4, dropout_prob: float = 0.0,
               attention_dropout_prob: float = 0.0, num_heads: int = 8,
               att_init_scale: float = 1.0, dense_init_scale: float = 1.0,
               qk_channels: Optional[int] = None,
               v_channels: Optional[int] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    checks.check_positive(num_heads, name='num_heads')
    self._widening_factor = widening_factor
    self._dropout_prob = dropout_prob
    self._attention_dropout_prob = attention_dropout_prob
    self._num_heads = num_heads
    self._att_init_scale = att_init_scale
    self._dense_init_scale = dense_init_scale
    self._qk_channels = qk_channels
    self._v_channels = v_channels

  def __call__(self, inputs: jax.Array, *, is_training: bool,
               attention_mask: Optional[jax.Array] = None) -> jax.Array:
    """Maps [B, N, C] to [B, N, C]; `attention_mask` is an optional [B, N, N]."""
    checks.check_rank(inputs, 3, name='inputs')
    checks.check_floating(inputs, name='inputs')
    channels = inputs.shape[-1]
    checks.check_divisible(self._qk_channels or channels, self._num_heads,
                           name='qk_channels' if self._qk_channels
                           else 'inputs channels')
    qkv = layer_norm(inputs)
    attention = Attention(
        num_heads=self._num_heads, init_scale=self._att_init_scale,
        qk_channels=self._qk_channels, v_channels=self._v_channels,
        output_channels=channels,
        dropout_prob=self._attention_dropout_prob if is_training else 0.0,
    )(qkv, qkv, attention_mask=attention_mask)
    x = inputs + ops.dropout(attention, self._dropout_prob, is_training=is_training)
    x = x + MLP(widening_factor=self._widening_factor,
                dropout_prob=self._dropout_prob,
                init_scale=self._dense_init_scale)(
                    layer_norm(x), is_training=is_training)
    return ops.residual_boundary(x)


class CrossAttention(hk.Module):
  """Pre-LayerNorm cross-attention followed by an MLP.

  The output has the query's width. `shape_for_attn` picks whether the default
  Q/K width follows the query ('q') or the key/value input ('kv');
  `use_query_residual` adds the query back to the attention output (turn it off when
  queries and outputs mean different things, e.g. positions in, pixels out).
  """

  def __init__(self, *, widening_factor: int = 1, dropout_prob: float = 0.0,
               attention_dropout_prob: float = 0.0, num_heads: int = 8,
               att_init_scale: float = 1.0, dense_init_scale: float = 1.0,
               shape_for_attn: str = 'kv', use_query_residual: bool = True,
               qk_channels: Optional[int] = None,
               v_channels: Optional[int] = None,
               query_chunk_size: Optional[int] = None,
               kv_chunk_size: Optional[int] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    checks.check_choice(shape_for_attn, ('q', 'kv'), name='shape_for_attn')
    checks.check_positive(num_heads, name='num_heads')
    chunking.check_chunk_size(query_chunk_size, name='query_chunk_size')
    chunking.check_chunk_size(kv_chunk_size, name='kv_chunk_size')
    self._query_chunk_size = query_chunk_size
    self._kv_chunk_size = kv_chunk_size
    self._widening_factor = widening_factor
    self._dropout_prob = dropout_prob
    self._attention_dropout_prob = attention_dropout_prob
    self._num_heads = num_heads
    self._att_init_scale = att_init_scale
    self._dense_init_scale = dense_init_scale
    self._shape_for_attn = shape_for_attn
    self._use_query_residual = use_query_residual
    self._qk_channels = qk_channels
    self._v_channels = v_channels

  def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array, *,
               is_training: bool,
               attention_mask: Optional[jax.Array] = None) -> jax.Array:
    """Maps queries [B, Q, Cq] and inputs [B, K, Ckv] to [B, Q, Cq].

    Queries shared by every example may come as [Q, Cq]: their LayerNorm and
    projection run once (see `Attention`). `inputs_kv` may be a
    position.LazyFourierFeatures (expanded per kv chunk).
    """
    checks.check_rank(inputs_kv, 3, name='inputs_kv')
    checks.check_floating(inputs_kv, name='inputs_kv')
    batch = inputs_kv.shape[0]
    _check_queries(inputs_q, batch)
    output_channels = inputs_q.shape[-1]
    source = inputs_q if self._shape_for_attn == 'q' else inputs_kv
    qk_channels = self._qk_channels or source.shape[-1]
    checks.check_divisible(
        qk_channels, self._num_heads,
        name='qk_channels' if self._qk_channels else
        f'{"inputs_q" if self._shape_for_attn == "q" else "inputs_kv"} channels')
    attention = Attention(
        num_heads=self._num_heads, init_scale=self._att_init_scale,
        dropout_prob=self._attention_dropout_prob if is_training else 0.0,
        qk_channels=qk_channels, v_channels=self._v_channels,
        output_channels=output_channels,
        query_chunk_size=self._query_chunk_size,
        kv_chunk_size=self._kv_chunk_size,
    )
    # The inputs' LayerNorm (and a lazy input's expansion) runs inside the attention:
    # chunk by chunk with kv_chunk_size.
    q_norm, kv_norm = ops.LayerNorm(), ops.LayerNorm()
    attention = attention(q_norm(inputs_q), inputs_kv, kv_transform=kv_norm,
                          attention_mask=attention_mask)  # [B, Q, Cq]
    attention = ops.dropout(attention, self._dropout_prob, is_training=is_training)
    if self._use_query_residual:
      if inputs_q.ndim == 2:
        inputs_q = ops.broadcast_batch(inputs_q, batch)  # [B, Q, Cq]
      x = inputs_q + attention
    else:
      x = attention
    x = x + MLP(widening_factor=self._widening_factor,
                dropout_prob=self._dropout_prob,
                init_scale=self._dense_init_scale)(
                    layer_norm(x), is_training=is_training)
    return ops.residual_boundary(x)
