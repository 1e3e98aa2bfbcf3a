"""The one seam between the blocks and the kernels: every dense layer, LayerNorm,
attention product, residual boundary and rematerialisation of a block goes through here.

Two implementations (perceiver_agents/kernels/__init__.py says how one is chosen):

  reference  hk.Linear, hk.LayerNorm, jnp.einsum, jnp.broadcast_to, hk.remat and no
             boundary: the model as written, differentiated by JAX.
  fast       the same forward values with hand-written backward passes
             (kernels/layers.py, kernels/cpu_gemm.py), fusion boundaries at the end of
             each residual block (kernels/fusion.py) and a rematerialisation XLA:CPU
             honours (kernels/remat.py).

`Linear` and `LayerNorm` are `hk.Linear` and `hk.LayerNorm` (same module and parameter
names, shapes, initialisers), so a parameter tree does not depend on the implementation.
`gelu` is the blocks' activation: the tanh approximation, as published, or the exact
(erf) one inside `exact_gelu()` (transformers' `hidden_act='gelu'`).
"""
import contextlib
import contextvars
from typing import Any, Callable, Iterator, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_agents import kernels
from perceiver_agents.kernels import cpu_gemm
from perceiver_agents.kernels import fusion
from perceiver_agents.kernels import layers as kernel_layers
from perceiver_agents.kernels import remat as kernel_remat

LAYER_NORM_EPS = kernel_layers.LAYER_NORM_EPS


def _fast() -> bool:
  return kernels.current() == 'fast'


class Linear(hk.Linear):
  """`hk.Linear` (parameters 'w' [Cin, Cout], 'b' [Cout]); `fast`: kernels/layers.dense.

  Returns the inputs' dtype, or with `float32_output=True` at least float32: a model's
  last projection (logits, flow, pixels), which bfloat16 compute would otherwise round
  to 8 mantissa bits before the loss reads it (`fast` returns the product's float32
  accumulation; `reference` casts hk.Linear's output).
  """

  def __init__(self, output_size: int, *, float32_output: bool = False, **kwargs):
    super().__init__(output_size, **kwargs)
    self._float32_output = float32_output

  def __call__(self, inputs: jax.Array, *, precision=None) -> jax.Array:
    """[..., Cin] -> [..., Cout]."""
    if not inputs.shape:
      raise ValueError('Linear: input must not be scalar.')
    if precision is not None or not _fast():
      out = super().__call__(inputs, precision=precision)
      return out.astype(self._output_dtype(inputs))
    input_size = self.input_size = inputs.shape[-1]
    w_init = self.w_init or hk.initializers.TruncatedNormal(
        stddev=1.0 / input_size ** 0.5)
    w = hk.get_parameter('w', [input_size, self.output_size], inputs.dtype,
                         init=w_init)
    b = (hk.get_parameter('b', [self.output_size], inputs.dtype, init=self.b_init)
         if self.with_bias else None)
    return _dense(inputs, w, b, self._output_dtype(inputs))

  def _output_dtype(self, inputs: jax.Array) -> jnp.dtype:
    if self._float32_output:
      return jnp.promote_types(inputs.dtype, jnp.float32)
    return inputs.dtype


def _dense(x: jax.Array, w: jax.Array, b: Optional[jax.Array],
           out_dtype: jnp.dtype) -> jax.Array:
  """'fast' x [..., Cin] @ w [Cin, Cout] (+ b [Cout]) in out_dtype: one oneDNN product
  with the bias and rounding inside for bfloat16, else kernels/layers.dense's float32
  accumulation plus b, cast."""
  if cpu_gemm.in_place_products(x, w):
    b = jnp.zeros(w.shape[-1:], x.dtype) if b is None else b
    return kernel_layers.dense_bias_bfloat16(x, w, b, out_dtype)
  out = kernel_layers.dense(x, w)
  return (out if b is None else out + b).astype(out_dtype)


class Conv1x1(hk.Conv2D):
  """`hk.Conv2D` with a 1x1 kernel and stride `stride` (same module name 'conv2_d',
  parameters 'w' [1, 1, Cin, Cout] and 'b' [Cout], initialisers).

  `fast`: the strided pixels as rows [B * H' * W', Cin] of Linear's product (a 1x1
  convolution is one), whose bias gradient is a column sum of a 2-D cotangent: for
  the [B, H', W', C] broadcast of hk.Conv2D XLA:CPU sums the three leading axes as a
  reduce-window, 24 ms of image_small's step.
  """

  def __init__(self, output_channels: int, *, stride: int = 1,
               name: Optional[str] = None):
    super().__init__(output_channels, kernel_shape=1, stride=stride,
                     name=name or 'conv2_d')

  def __call__(self, inputs: jax.Array, *, precision=None) -> jax.Array:  # pylint: disable=arguments-differ
    """[B, H, W, Cin] -> [B, ceil(H / stride), ceil(W / stride), Cout]."""
    if not _fast() or precision is not None or inputs.ndim != 4:
      return super().__call__(inputs, precision=precision)
    channels = inputs.shape[-1]
    w = hk.get_parameter('w', [1, 1, channels, self.output_channels], inputs.dtype,
                         init=self.w_init or hk.initializers.TruncatedNormal(
                             stddev=1.0 / channels ** 0.5))
    b = hk.get_parameter('b', [self.output_channels], inputs.dtype, init=self.b_init)
    sh, sw = self.stride
    pixels = inputs[:, ::sh, ::sw]  # 'SAME' padding adds nothing to a 1x1 kernel
    out = _dense(pixels.reshape(-1, channels), w[0, 0], b, inputs.dtype)
    return out.reshape(pixels.shape[:-1] + (self.output_channels,))


class LayerNorm(hk.LayerNorm):
  """`hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)`, eps 1e-5."""

  def __init__(self, name: Optional[str] = None):
    super().__init__(axis=-1, create_scale=True, create_offset=True,
                     eps=LAYER_NORM_EPS, name=name)

  def __call__(self, inputs: jax.Array) -> jax.Array:  # pylint: disable=arguments-differ
    """[..., C] -> [..., C], normalised over C."""
    if not _fast():
      return super().__call__(inputs)
    shape = inputs.shape[-1:]
    scale = hk.get_parameter('scale', shape, inputs.dtype, init=self.scale_init)
    offset = hk.get_parameter('offset', shape, inputs.dtype, init=self.offset_init)
    return kernel_layers.layer_norm(inputs, scale, offset)


def linear(output_size: int, *, init_scale: float = 1.0, with_bias: bool = True,
           float32_output: bool = False, name: Optional[str] = None) -> Linear:
  """A position-wise dense layer (a 1x1 convolution over the index axis)."""
  return Linear(output_size, with_bias=with_bias, float32_output=float32_output,
                w_init=hk.initializers.VarianceScaling(init_scale), name=name)


def layer_norm(x: jax.Array, name: Optional[str] = None) -> jax.Array:
  """LayerNorm of x [..., C] over C with a learned scale and offset."""
  return LayerNorm(name=name)(x)


def einsum(subscripts: str, x: jax.Array, y: jax.Array) -> jax.Array:
  """Attention's products, e.g. 'bhqd,bhkd->bhqk' (`jnp.einsum`; `fast`: its backward
  products through kernels/cpu_gemm.py on CPU, and bfloat16 operands accumulated and
  returned in float32)."""
  if _fast():
    return cpu_gemm.einsum_fast_backward(subscripts, x, y)
  return jnp.einsum(subscripts, x, y)


def attention_logits(q: jax.Array, k: jax.Array) -> jax.Array:
  """q [B, Q, H, D] . k [B, K, H, D] -> logits [B, H, Q, K] (float32 for bfloat16).

  Read heads-major ([B, H, N, D] copies, plain batched matmuls for XLA), or in place
  by the oneDNN kernel where it takes bfloat16 operands (cpu_gemm.in_place_products).
  """
  if _fast() and cpu_gemm.in_place_products(q, k):
    return cpu_gemm.einsum_fast_backward('bqhd,bkhd->bhqk', q, k)
  return einsum('bhqd,bhkd->bhqk', jnp.swapaxes(q, 1, 2), jnp.swapaxes(k, 1, 2))


def attention_values(p: jax.Array, v: jax.Array) -> jax.Array:
  """p [B, H, Q, K] . v [B, K, H, Dv] -> [B, Q, H, Dv] (float32 for bfloat16), laid
  out as `attention_logits` says."""
  if _fast() and cpu_gemm.in_place_products(p, v):
    return cpu_gemm.einsum_fast_backward('bhqk,bkhd->bqhd', p, v)
  return jnp.swapaxes(einsum('bhqk,bhkd->bhqd', p, jnp.swapaxes(v, 1, 2)), 1, 2)


def broadcast_batch(x: jax.Array, batch_size: int) -> jax.Array:
  """x [...] -> [batch_size, ...], the same array for every example."""
  if _fast():
    return kernel_layers.broadcast_batch(x, batch_size)
  return jnp.broadcast_to(x[None], (batch_size,) + x.shape)


def residual_boundary(x: jax.Array) -> jax.Array:
  """The output x [B, N, C] of a residual block: the identity (`fast`: the backward
  materialises its cotangent once, kernels/fusion.py)."""
  if _fast():
    return fusion.cotangent_boundary(x)
  return x


def remat(module: hk.Module, fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn(*args)`, which calls `module`, recomputed in the backward pass instead of
  keeping its activations (`hk.remat`; `fast`: kernels/remat.py, which XLA:CPU honours).

  `fn` may read `module`'s parameters and draw RNG keys, but not create Haiku state.
  """
  if _fast():
    return kernel_remat.remat(module, fn)
  return hk.remat(fn)


def dropout(x: jax.Array, rate: float, *, is_training: bool) -> jax.Array:
  """`hk.dropout` of x at `rate` while training (needs an RNG key then), else x."""
  if is_training and rate > 0:
    return hk.dropout(hk.next_rng_key(), rate, x)
  return x


_EXACT_GELU = contextvars.ContextVar('perceiver_agents_exact_gelu', default=False)


def gelu(x: jax.Array) -> jax.Array:
  """GELU of x: the tanh approximation (the published models), exact in `exact_gelu()`.

  Computed in float32 for bfloat16 x and rounded once: op by op in bfloat16, XLA
  rounds every intermediate of the polynomial and tanh (4x slower on CPU, and less
  exact)."""
  out = jax.nn.gelu(x.astype(jnp.promote_types(x.dtype, jnp.float32)),
                    approximate=not _EXACT_GELU.get())
  return out.astype(x.dtype)


@contextlib.contextmanager
def exact_gelu() -> Iterator[None]:
  """Within it, `gelu` is the exact (erf) GELU; it applies while a model is traced."""
  token = _EXACT_GELU.set(True)
  try:
    yield
  finally:
    _EXACT_GELU.reset(token)
