"""Fusion boundaries for the backward pass of residual stacks.

In a deep pre-LayerNorm residual stack, the cotangent of the residual stream at layer l
is the cotangent at layer l + 1 plus that layer's contributions: a chain of cheap
elementwise adds and LayerNorm-backward products. XLA fuses cheap producers into every
consumer that wants them (duplicating them rather than writing them to memory once), so
when the chain is never materialised, each weight-gradient dot of layer l re-evaluates
the whole chain from the top of the stack: work quadratic in depth (on XLA:CPU, a
large share of a 6-layer Perceiver IO's gradient; BENCHMARKS.md, benchmarks/peer.py).

`jax.lax.optimization_barrier` is the tool meant for this, but XLA:CPU strips it
before fusion. `cotangent_boundary` is therefore an identity whose backward writes the
cotangent to memory through a row gather (an exact copy, which XLA:CPU never fuses into
its consumers), and uses the optimization barrier on the other backends. Forward values
and gradients are bit-identical to the plain identity.
"""

import jax
import jax.numpy as jnp


def _materialise(g: jax.Array) -> jax.Array:
  """An exact copy of `g` [..., C] that XLA will not fuse into its consumers."""
  if g.ndim == 0 or g.size == 0:
    return g
  if jax.default_backend() != 'cpu':
    return jax.lax.optimization_barrier(g)
  rows = g.reshape(-1, g.shape[-1])  # [R, C]
  return jnp.take(rows, jnp.arange(rows.shape[0]), axis=0,
                  unique_indices=True, indices_are_sorted=True).reshape(g.shape)


@jax.custom_vjp
def cotangent_boundary(x: jax.Array) -> jax.Array:
  """Identity on `x` [..., C]; in the backward, the cotangent is materialised once."""
  return x


def _forward(x):
  return x, None


def _backward(_, g):
  return (_materialise(g),)


cotangent_boundary.defvjp(_forward, _backward)
