"""Dense, LayerNorm and batch-broadcast products with hand-written backward passes.

Pure functions of arrays (the parameters come from blocks/ops.py's Linear and LayerNorm,
which keep haiku's module and parameter names). The forward values are those of the
plain jnp expressions; only the gradients are computed differently (same maths):

  Linear     dW = X^T G as one 2-D product over all rows [R, Cin] x [R, Cout] (on CPU
             through OpenBLAS, kernels/cpu_gemm.py), dX = G W^T. Through autodiff of
             `jnp.dot`, XLA:CPU re-derived X inside the backward and fed both operands
             to the weight-gradient dot in transposed layouts.
  LayerNorm  dX = rstd * (G s - mean(G s) - x_hat * mean(G s * x_hat)) from the saved
             normalised input x_hat and 1/std, instead of differentiating mean, variance
             and rsqrt op by op.

`broadcast_batch` repeats a shared array (a learned position table, the initial latents)
over the batch; on CPU its backward sums the batch as a product with ones, since
XLA:CPU's bare reduction over a short leading axis is many times slower than that.

Measured speed-ups: BENCHMARKS.md (benchmarks/peer.py).
"""

import functools
from typing import Tuple

import jax
import jax.numpy as jnp

from perceiver_agents.kernels import cpu_gemm

LAYER_NORM_EPS = 1e-5


@jax.custom_vjp
def dense(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [..., Cin] @ w [Cin, Cout] -> [..., Cout], in `cpu_gemm.accumulation_dtype`
  (float32 for bfloat16 operands)."""
  return _dense_forward(x, w)[0]


def _dense_forward(x, w):
  return jnp.dot(x, w, preferred_element_type=cpu_gemm.accumulation_dtype(x, w)), (x, w)


def _dense_backward(residuals, g):
  x, w = residuals
  g = g.astype(x.dtype)  # bfloat16 operands, float32 accumulation
  rows_x = x.reshape(-1, x.shape[-1])  # [R, Cin]
  rows_g = g.reshape(-1, g.shape[-1])  # [R, Cout]
  dw = cpu_gemm.einsum('rk,rn->kn', rows_x, rows_g)  # [Cin, Cout]
  dx = jnp.dot(g, w.T, preferred_element_type=cpu_gemm.accumulation_dtype(g, w))
  return dx.astype(x.dtype), dw.astype(w.dtype)


dense.defvjp(_dense_forward, _dense_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def dense_bias_bfloat16(x: jax.Array, w: jax.Array, b: jax.Array,
                        out_dtype: jnp.dtype) -> jax.Array:
  """x [..., Cin] @ w [Cin, Cout] + b [Cout] of bfloat16 x, w, b in `out_dtype`, as one
  oneDNN product whose float32 accumulation gets the bias and is rounded once
  (cpu_gemm.dense_bfloat16: no float32 output written and read back). Gradients as
  `dense`'s, db the row sum of the cotangent."""
  return cpu_gemm.dense_bfloat16(x, w, b, out_dtype)


def _dense_bias_forward(x, w, b, out_dtype):
  return cpu_gemm.dense_bfloat16(x, w, b, out_dtype), (x, w, b)


def _dense_bias_backward(out_dtype, residuals, g):
  del out_dtype
  x, w, b = residuals
  dx, dw = _dense_backward((x, w), g)
  rows = tuple(range(g.ndim - 1))
  return dx, dw, jnp.sum(g.astype(jnp.float32), axis=rows).astype(b.dtype)


dense_bias_bfloat16.defvjp(_dense_bias_forward, _dense_bias_backward)


def _normalise(x: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """x [..., C] -> (x_hat [..., C], 1/std [..., 1]) over the last axis, in float32 for
  bfloat16 or float16 x."""
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = jnp.mean(x, axis=-1, keepdims=True)
  centred = x - mean
  rstd = jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) +
                       LAYER_NORM_EPS)
  return centred * rstd, rstd


@jax.custom_vjp
def layer_norm(x: jax.Array, scale: jax.Array, offset: jax.Array) -> jax.Array:
  """LayerNorm of x [..., C] over C with scale [C] and offset [C] (eps 1e-5), in x's
  dtype; statistics in float32 (also for bfloat16 x)."""
  return _layer_norm_forward(x, scale, offset)[0]


def _layer_norm_forward(x, scale, offset):
  x_hat, rstd = _normalise(x)
  out = (x_hat * scale + offset).astype(x.dtype)
  return out, (x_hat.astype(x.dtype), rstd, scale)  # kept in x's dtype


def _layer_norm_backward(residuals, g):
  x_hat, rstd, scale = residuals
  dtype = g.dtype
  x_hat = x_hat.astype(rstd.dtype)
  g = g.astype(rstd.dtype)
  rows = tuple(range(g.ndim - 1))
  g_scaled = g * scale
  dx = rstd * (g_scaled - jnp.mean(g_scaled, axis=-1, keepdims=True) -
               x_hat * jnp.mean(g_scaled * x_hat, axis=-1, keepdims=True))
  return (dx.astype(dtype), jnp.sum(g * x_hat, axis=rows).astype(scale.dtype),
          jnp.sum(g, axis=rows).astype(scale.dtype))


layer_norm.defvjp(_layer_norm_forward, _layer_norm_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def broadcast_batch(x: jax.Array, batch_size: int) -> jax.Array:
  """x [...] -> [batch_size, ...], the same array for every example."""
  return jnp.broadcast_to(x[None], (batch_size,) + x.shape)


def _broadcast_batch_forward(x, batch_size):
  return broadcast_batch(x, batch_size), None


def _broadcast_batch_backward(batch_size, _, g):
  if jax.default_backend() != 'cpu':
    return (jnp.sum(g, axis=0),)
  # On CPU the cotangent is summed over the batch as a [B] x [B, size] product:
  # XLA:CPU's reduction over a short leading axis is many times slower.
  rows = g.reshape(batch_size, -1)
  total = jnp.dot(jnp.ones((batch_size,), g.dtype), rows,
                  precision=jax.lax.Precision.HIGHEST,
                  preferred_element_type=jnp.promote_types(g.dtype, jnp.float32))
  return (total.reshape(g.shape[1:]).astype(g.dtype),)


broadcast_batch.defvjp(_broadcast_batch_forward, _broadcast_batch_backward)

