"""Perceiver AR: causal long-context modelling with M latents over N inputs.

The last M of the N input positions act as latents. One causally masked cross-attention
lets latent i (at absolute position p = N - M + i) read every input at a position <= p;
a stack of causally masked self-attention layers then runs over the M latents alone, and
each latent predicts the token that follows its position. Cost is O(M N) for the
cross-attention and O(M^2) per latent layer, so it grows linearly with the context N.

Shape letters:
  B batch.               N input (context) positions.     M latents (last M positions).
  K key/value positions  (N, or fewer after context dropout, or cache slots S).
  S cache slots.         C channels.     H heads.     D channels per head.
  V vocabulary size.     L latent self-attention layers.

Positions are absolute token indices from the start of the sequence. They enter twice:
a learned table [max_context, C] added to the token embeddings, and rotary embeddings on
a fraction of each head's query/key channels (`rotary_fraction`).

Cached decoding (`prefill`, `decode_step`, `rewindow`) keeps
  * the cross-attention keys/values of every position seen so far ([B, max_context, H, D]),
  * per latent layer the keys/values of the latents in the current window ([B, S, H, D]),
  * the cross-attention outputs h0 of the window's latents ([B, S, C]).
A new token costs one query against the caches. The window starts at `window_start` and
grows by one latent per token; when its S slots are full, `rewindow` restarts it on the
last M - 1 positions (recomputing the latent stack from the cached h0; the cross-attention
is never recomputed). Every cached logit equals the uncached model's
`model(tokens[:, :length], num_latents=length - window_start)[:, -1]`; with S = M the
window slides by one each token and the logits are exactly those of the plain M-latent
model. See blocks/ar_generation.py for the sampling loop.
"""
from typing import NamedTuple, Optional, Tuple

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_agents.blocks import checks
from perceiver_agents.blocks import ops
from perceiver_agents.blocks.attention import attend
from perceiver_agents.blocks.attention import MLP
from perceiver_agents.blocks.ops import layer_norm
from perceiver_agents.blocks.ops import linear

KeyValue = Tuple[jax.Array, jax.Array]  # k [B, K, H, D], v [B, K, H, D]


def rotary_embed(x: jax.Array, positions: jax.Array, *, rotary_dims: int,
                 base: float = 10000.0) -> jax.Array:
  """Rotates the first `rotary_dims` channels of each head by the position's angles.

  Channel pairs (j, j + R/2), j < R/2, are rotated by positions * base^(-2j/R).

  Args:
    x: [B, T, H, D] queries or keys.
    positions: int [B, T] absolute positions.
    rotary_dims: R, even, <= D; 0 leaves `x` unchanged.
  Returns:
    [B, T, H, D] in x's dtype.
  """
  if rotary_dims == 0:
    return x
  half = rotary_dims // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [R/2]
  angles = positions.astype(jnp.float32)[..., None] * freqs  # [B, T, R/2]
  cos = jnp.cos(angles)[:, :, None, :].astype(x.dtype)  # [B, T, 1, R/2]
  sin = jnp.sin(angles)[:, :, None, :].astype(x.dtype)
  x1, x2, rest = x[..., :half], x[..., half:rotary_dims], x[..., rotary_dims:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1)


def causal_mask(q_positions: jax.Array, kv_positions: jax.Array) -> jax.Array:
  """[B, Q] and [B, K] absolute positions -> bool [B, Q, K], True where k <= q."""
  return kv_positions[:, None, :] <= q_positions[:, :, None]


class RotaryAttention(hk.Module):
  """Multi-head attention with rotary positions, split so keys/values can be cached."""

  def __init__(self, *, num_heads: int, rotary_fraction: float,
               name: Optional[str] = None):
    super().__init__(name=name)
    self._num_heads = num_heads
    self._rotary_fraction = rotary_fraction

  def _split(self, x: jax.Array) -> jax.Array:
    b, t, c = x.shape
    return jnp.reshape(x, [b, t, self._num_heads, c // self._num_heads])  # [B, T, H, D]

  def _rotary_dims(self, head_dim: int) -> int:
    return 2 * int(self._rotary_fraction * head_dim // 2)

  @hk.experimental.name_like('__call__')
  def keys_values(self, inputs: jax.Array, positions: jax.Array) -> KeyValue:
    """inputs [B, K, C], positions [B, K] -> rotated keys and values [B, K, H, D]."""
    channels = inputs.shape[-1]
    k = self._split(linear(channels, name='key')(inputs))  # [B, K, H, D]
    v = self._split(linear(channels, name='value')(inputs))  # [B, K, H, D]
    return rotary_embed(k, positions, rotary_dims=self._rotary_dims(k.shape[-1])), v

  def __call__(self, inputs_q: jax.Array, q_positions: jax.Array, kv: KeyValue,
               kv_positions: jax.Array) -> jax.Array:
    """Queries [B, Q, C] at [B, Q] attend causally to `kv` at [B, K]; returns [B, Q, C]."""
    channels = inputs_q.shape[-1]
    q = self._split(linear(channels, name='query')(inputs_q))  # [B, Q, H, D]
    q = rotary_embed(q, q_positions, rotary_dims=self._rotary_dims(q.shape[-1]))
    k, v = kv
    out = attend(q, k, v, attention_mask=causal_mask(q_positions, kv_positions))
    return linear(channels, name='output')(out)  # [B, Q, C]


def _write(cache: jax.Array, new: jax.Array, index) -> jax.Array:
  """Writes `new` [B, T, ...] into `cache` [B, S, ...] at slot `index` of axis 1."""
  return jax.lax.dynamic_update_slice_in_dim(cache, new.astype(cache.dtype), index, axis=1)


class _Layer(hk.Module):
  """Pre-LayerNorm attention (causal, rotary) then MLP, each with a residual.

  A cross layer (`cross=True`) has its own LayerNorm for the key/value inputs; a latent
  self-attention layer takes keys/values from its own normalised input.
  """

  def __init__(self, *, cross: bool, num_heads: int, rotary_fraction: float,
               widening_factor: int, dropout_prob: float, name: str):
    super().__init__(name=name)
    self._cross = cross
    self._num_heads = num_heads
    self._rotary_fraction = rotary_fraction
    self._widening_factor = widening_factor
    self._dropout_prob = dropout_prob

  def __call__(self, h: jax.Array, positions: jax.Array, *, is_training: bool,
               inputs_kv: Optional[jax.Array] = None,
               kv_positions: Optional[jax.Array] = None,
               cache: Optional[KeyValue] = None,
               cache_positions: Optional[jax.Array] = None,
               write_index=None) -> Tuple[jax.Array, KeyValue]:
    """One layer over queries `h` [B, Q, C] at `positions` [B, Q].

    Keys/values come from `inputs_kv` [B, K, C] at `kv_positions` (cross layer) or from
    `h` itself (latent layer). With `cache` ([B, S, H, D] twice, slots at
    `cache_positions` [B, S]) the new keys/values are written at slot `write_index` and
    the queries attend to the whole cache (slots after the query are masked causally).
    Returns the new `h` [B, Q, C] and the keys/values attended to.
    """
    attention = RotaryAttention(num_heads=self._num_heads,
                                rotary_fraction=self._rotary_fraction, name='attention')
    query = layer_norm(h, name='query_norm')  # [B, Q, C]
    if self._cross:
      kv = attention.keys_values(layer_norm(inputs_kv, name='kv_norm'), kv_positions)
    else:
      kv, kv_positions = attention.keys_values(query, positions), positions
    if cache is not None:
      kv = (_write(cache[0], kv[0], write_index), _write(cache[1], kv[1], write_index))
      kv_positions = cache_positions
    h = h + ops.dropout(attention(query, positions, kv, kv_positions), self._dropout_prob,
                        is_training=is_training)
    mlp = MLP(widening_factor=self._widening_factor, name='mlp')
    h = h + ops.dropout(mlp(layer_norm(h, name='mlp_norm'), is_training=is_training),
                        self._dropout_prob, is_training=is_training)
    return ops.residual_boundary(h), kv


class DecodeCache(NamedTuple):
  """What cached decoding carries from one token to the next.

  Attributes:
    cross_k, cross_v: [B, max_context, Hc, Dc]; slot p holds position p.
    latent_k, latent_v: L-tuples of [B, S, H, D]; slot j holds position window_start + j.
    latent_h0: [B, S, C] cross-attention outputs of the window's latents.
    length: int32 [], tokens seen so far (= the next token's position).
    window_start: int32 [], absolute position of latent slot 0.
  """
  cross_k: jax.Array
  cross_v: jax.Array
  latent_k: Tuple[jax.Array, ...]
  latent_v: Tuple[jax.Array, ...]
  latent_h0: jax.Array
  length: jax.Array
  window_start: jax.Array


class PerceiverAR(hk.Module):
  """Perceiver AR over token ids: [B, N] tokens -> [B, M, V] next-token logits.

  Args:
    vocab_size: V.
    max_context: the longest input N (size of the learned position table).
    num_latents: M, the default number of latents (the last M positions).
    num_channels: C, width of embeddings, cross-attention and latents.
    num_heads: H of the latent self-attention layers.
    num_cross_heads: heads of the cross-attention (default: num_heads).
    num_layers: L latent self-attention layers after the cross-attention.
    widening_factor: MLP hidden width / C.
    rotary_fraction: fraction of each head's channels rotated by position (0 to 1).
    context_dropout: during training, this fraction of the prefix (the N - M positions
      before the latents) is dropped before the cross-attention; kept inputs keep their
      positions, the latent positions are never dropped.
    dropout_prob: dropout on the residual branches during training.
    use_remat: rematerialise each layer in the backward pass (`ops.remat`), trading
      compute for memory.
  """

  def __init__(self, *, vocab_size: int, max_context: int, num_latents: int,
               num_channels: int = 256, num_heads: int = 4,
               num_cross_heads: Optional[int] = None, num_layers: int = 4,
               widening_factor: int = 4, rotary_fraction: float = 0.5,
               context_dropout: float = 0.0, dropout_prob: float = 0.0,
               use_remat: bool = False, name: Optional[str] = 'perceiver_ar'):
    super().__init__(name=name)
    for arg, value in (('vocab_size', vocab_size), ('max_context', max_context),
                       ('num_latents', num_latents), ('num_channels', num_channels),
                       ('widening_factor', widening_factor)):
      if value is None or value < 1:
        raise ValueError(f'{arg} must be a positive integer, got {value}.')
    if num_latents > max_context:
      raise ValueError(f'num_latents (M={num_latents}) must be <= max_context '
                       f'(N={max_context}).')
    num_cross_heads = num_heads if num_cross_heads is None else num_cross_heads
    checks.check_divisible(num_channels, num_heads, name='num_channels')
    checks.check_divisible(num_channels, num_cross_heads, name='num_channels',
                           heads_name='num_cross_heads')
    if num_layers < 0:
      raise ValueError(f'num_layers must be >= 0, got {num_layers}.')
    if not 0.0 <= rotary_fraction <= 1.0:
      raise ValueError(f'rotary_fraction must be in [0, 1], got {rotary_fraction}.')
    if not 0.0 <= context_dropout < 1.0:
      raise ValueError(f'context_dropout must be in [0, 1), got {context_dropout}.')
    if not 0.0 <= dropout_prob < 1.0:
      raise ValueError(f'dropout_prob must be in [0, 1), got {dropout_prob}.')
    self.vocab_size = vocab_size
    self.max_context = max_context
    self.num_latents = num_latents
    self.num_channels = num_channels
    self._num_heads = num_heads
    self._num_cross_heads = num_cross_heads
    self.num_layers = num_layers
    self._widening_factor = widening_factor
    self._rotary_fraction = rotary_fraction
    self._context_dropout = context_dropout
    self._dropout_prob = dropout_prob
    self._use_remat = use_remat

  # --- pieces shared by the full forward and cached decoding -------------------------

  @hk.experimental.name_like('__call__')
  def _embed(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
    """tokens int [B, T] at positions [B, T] -> [B, T, C]."""
    embed = hk.Embed(self.vocab_size, self.num_channels, name='token_embed',
                     w_init=hk.initializers.TruncatedNormal(0.02))
    table = hk.get_parameter('position_embeddings', [self.max_context, self.num_channels],
                             init=hk.initializers.TruncatedNormal(0.02))
    return embed(tokens) + jnp.take(table, positions, axis=0).astype(
        embed.embeddings.dtype)

  @hk.experimental.name_like('__call__')
  def _layer(self, index: Optional[int]) -> _Layer:
    """The cross layer (index None) or latent self-attention layer `index`."""
    cross = index is None
    return _Layer(cross=cross,
                  num_heads=self._num_cross_heads if cross else self._num_heads,
                  rotary_fraction=self._rotary_fraction,
                  widening_factor=self._widening_factor, dropout_prob=self._dropout_prob,
                  name='cross_layer' if cross else f'latent_layer_{index}')

  def _run(self, layer: _Layer, *args, is_training: bool, **kwargs):
    def fn(args, kwargs):  # every array an argument: remat differentiates them all
      return layer(*args, is_training=is_training, **kwargs)
    if self._use_remat and is_training:
      fn = ops.remat(layer, fn)
    return fn(args, kwargs)

  def _latent_stack(self, h: jax.Array, positions: jax.Array, *,
                    is_training: bool) -> Tuple[jax.Array, list]:
    """Causal self-attention over latents h [B, M, C] at [B, M]; returns h, L (k, v)."""
    kvs = []
    for i in range(self.num_layers):
      h, kv = self._run(self._layer(i), h, positions, is_training=is_training)
      kvs.append(kv)
    return h, kvs

  @hk.experimental.name_like('__call__')
  def _logits(self, h: jax.Array) -> jax.Array:
    """[B, M, C] -> [B, M, V]."""
    return linear(self.vocab_size, name='logits')(layer_norm(h, name='final_norm'))

  def _drop_context(self, x: jax.Array, positions: jax.Array,
                    prefix: int) -> Tuple[jax.Array, jax.Array]:
    """Keeps a random subset of the first `prefix` positions of x [B, T, C], all later ones.

    Returns inputs [B, K, C] and their positions [B, K], K = kept prefix + T - prefix.
    """
    batch, length, _ = x.shape
    keep = prefix - int(round(self._context_dropout * prefix))
    keys = jax.random.split(hk.next_rng_key(), batch)
    kept = jax.vmap(lambda k: jnp.sort(jax.random.permutation(k, prefix)[:keep]))(keys)
    latent = jnp.broadcast_to(jnp.arange(prefix, length), (batch, length - prefix))
    index = jnp.concatenate([kept, latent], axis=1)  # [B, K]
    return jnp.take_along_axis(x, index[..., None], axis=1), index

  def _check_tokens(self, tokens, name: str = 'tokens') -> None:
    checks.check_rank(tokens, 2, name=name)
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f'{name} must hold integer token ids, got dtype {tokens.dtype}.')
    if tokens.shape[1] > self.max_context:
      raise ValueError(f'{name} length ({tokens.shape[1]}) exceeds max_context '
                       f'({self.max_context}).')
    if tokens.shape[1] < 1:
      raise ValueError(f'{name} must hold at least one token, got shape {tokens.shape}.')

  def _forward(self, tokens: jax.Array, *, num_latents: int, latent_start,
               is_training: bool):
    """Full forward; returns logits [B, W, V] and (cross kv, h0 [B, W, C], latent kvs)."""
    batch, length = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(length), (batch, length))  # [B, N]
    x = self._embed(tokens, positions)  # [B, N, C]
    q_positions = latent_start + jnp.broadcast_to(
        jnp.arange(num_latents), (batch, num_latents))  # [B, M]
    x_q = jax.lax.dynamic_slice_in_dim(x, latent_start, num_latents, axis=1)  # [B, M, C]
    x_kv, kv_positions = x, positions
    if (is_training and self._context_dropout > 0 and isinstance(latent_start, int)
        and latent_start > 0):
      x_kv, kv_positions = self._drop_context(x, positions, latent_start)  # [B, K, C]
    h0, cross_kv = self._run(self._layer(None), x_q, q_positions, is_training=is_training,
                             inputs_kv=x_kv, kv_positions=kv_positions)  # [B, M, C]
    h, latent_kvs = self._latent_stack(h0, q_positions, is_training=is_training)
    return self._logits(h), (cross_kv, h0, latent_kvs)

  # --- public API ------------------------------------------------------------------

  def __call__(self, tokens: jax.Array, *, is_training: bool,
               num_latents: Optional[int] = None,
               latent_start=None) -> jax.Array:
    """Next-token logits of the latent positions.

    Args:
      tokens: int [B, N], N <= max_context.
      is_training: enables dropout and context dropout.
      num_latents: M for this call (default: the configured M); M <= N.
      latent_start: absolute position of the first latent (default N - M). May be a
        traced integer; positions after the window are then ignored by causality.
    Returns:
      [B, M, V]; row i predicts the token at position latent_start + i + 1.
    """
    self._check_tokens(tokens)
    length = tokens.shape[1]
    num_latents = self.num_latents if num_latents is None else num_latents
    if not 1 <= num_latents <= length:
      raise ValueError(f'num_latents (M={num_latents}) must be between 1 and the input '
                       f'length (N={length}).')
    if latent_start is None:
      latent_start = length - num_latents
    elif isinstance(latent_start, int) and not 0 <= latent_start <= length - num_latents:
      raise ValueError(f'latent_start ({latent_start}) must be in [0, N - M] = '
                       f'[0, {length - num_latents}].')
    logits, _ = self._forward(tokens, num_latents=num_latents, latent_start=latent_start,
                              is_training=is_training)
    return logits

  def prefill(self, tokens: jax.Array, *, num_latents: int,
              cache_latents: int) -> Tuple[jax.Array, DecodeCache]:
    """Runs the prompt tokens [B, P] and fills a cache with S = cache_latents slots.

    The window holds the last `num_latents` (W <= S) prompt positions. Returns the logits
    [B, W, V] (those of `__call__(tokens, num_latents=W)`) and the cache.
    """
    self._check_tokens(tokens, name='prompt')
    batch, length = tokens.shape
    if not 1 <= num_latents <= min(length, cache_latents):
      raise ValueError(f'num_latents ({num_latents}) must be between 1 and '
                       f'min(prompt length {length}, cache_latents {cache_latents}).')
    start = length - num_latents
    logits, (cross_kv, h0, latent_kvs) = self._forward(
        tokens, num_latents=num_latents, latent_start=start, is_training=False)

    def padded(x, slots):  # [B, T, ...] -> [B, slots, ...], zeros after T.
      return _write(jnp.zeros((batch, slots) + x.shape[2:], x.dtype), x, 0)

    cache = DecodeCache(
        cross_k=padded(cross_kv[0], self.max_context),
        cross_v=padded(cross_kv[1], self.max_context),
        latent_k=tuple(padded(k, cache_latents) for k, _ in latent_kvs),
        latent_v=tuple(padded(v, cache_latents) for _, v in latent_kvs),
        latent_h0=padded(h0, cache_latents),
        length=jnp.asarray(length, jnp.int32),
        window_start=jnp.asarray(start, jnp.int32))
    return logits, cache

  def decode_step(self, token: jax.Array, cache: DecodeCache
                  ) -> Tuple[jax.Array, DecodeCache]:
    """Appends token int [B] at position cache.length; returns its logits [B, V].

    The caller must keep cache.length < max_context and the latent slot
    length - window_start < S (call `rewindow` when the window is full).
    """
    checks.check_rank(token, 1, name='token')
    batch = token.shape[0]
    pos = cache.length
    slot = pos - cache.window_start
    positions = jnp.full((batch, 1), pos, jnp.int32)  # [B, 1]
    x = self._embed(token[:, None], positions)  # [B, 1, C]
    cross_positions = jnp.broadcast_to(jnp.arange(self.max_context),
                                       (batch, self.max_context))  # [B, N]
    h, (cross_k, cross_v) = self._layer(None)(
        x, positions, is_training=False, inputs_kv=x, kv_positions=positions,
        cache=(cache.cross_k, cache.cross_v), cache_positions=cross_positions,
        write_index=pos)  # [B, 1, C]
    latent_h0 = _write(cache.latent_h0, h, slot)
    slots = cache.latent_h0.shape[1]
    latent_positions = cache.window_start + jnp.broadcast_to(
        jnp.arange(slots), (batch, slots))  # [B, S]
    latent_k, latent_v = [], []
    for i in range(self.num_layers):
      h, (k, v) = self._layer(i)(
          h, positions, is_training=False, cache=(cache.latent_k[i], cache.latent_v[i]),
          cache_positions=latent_positions, write_index=slot)
      latent_k.append(k)
      latent_v.append(v)
    logits = self._logits(h)[:, 0]  # [B, V]
    return logits, DecodeCache(cross_k, cross_v, tuple(latent_k), tuple(latent_v),
                               latent_h0, pos + 1, cache.window_start)

  def rewindow(self, cache: DecodeCache, *, num_latents: int) -> DecodeCache:
    """Restarts the latent window on the last `num_latents` - 1 positions seen.

    After it, the next `decode_step` gives the window exactly `num_latents` latents. The
    latent stack is recomputed from the cached cross-attention outputs h0 (which must
    still hold those positions); the cross-attention caches are kept as they are.
    """
    keep = num_latents - 1
    batch, slots, _ = cache.latent_h0.shape
    if not 0 <= keep < slots:
      raise ValueError(f'num_latents ({num_latents}) must be between 1 and the cache '
                       f'slots ({slots}).')
    new_start = cache.length - keep
    h0 = jax.lax.dynamic_slice_in_dim(cache.latent_h0, new_start - cache.window_start,
                                      keep, axis=1)  # [B, M-1, C]
    positions = new_start + jnp.broadcast_to(jnp.arange(keep), (batch, keep))
    _, kvs = self._latent_stack(h0, positions, is_training=False)
    return cache._replace(
        latent_k=tuple(_write(old, k, 0) for old, (k, _) in zip(cache.latent_k, kvs)),
        latent_v=tuple(_write(old, v, 0) for old, (_, v) in zip(cache.latent_v, kvs)),
        latent_h0=_write(cache.latent_h0, h0, 0),
        window_start=new_start)

