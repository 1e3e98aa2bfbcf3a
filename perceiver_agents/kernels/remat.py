"""Rematerialisation that XLA:CPU honours.

`hk.remat` (`jax.checkpoint`) recomputes a function's forward in the backward pass so
that only its inputs are kept. It keeps the recomputation apart from the forward with an
optimization barrier, which XLA:CPU strips (see kernels/fusion.py): the recomputed
forward is then merged with (or scheduled next to) the original one and every
activation stays alive: on XLA:CPU a deep stack's gradient needs the same temp memory
with and without `jax.checkpoint` (BENCHMARKS.md, "Memory at scale").

`remat` below recomputes in a custom VJP whose recomputation takes the layer's input
through a select on the incoming cotangent (`x` if that cotangent is not NaN, else NaN):
a data dependency no compiler can remove, so the forward runs again only when the
cotangent exists and cannot be merged with the first one.
For finite cotangents the values are those of the plain function, so the gradients are
identical; a NaN cotangent gives NaN gradients, as it would anyway.
"""
import functools
from typing import Any, Callable

import haiku as hk
import jax
import jax.numpy as jnp


def _tie(x, anchor):
  """`x` unchanged, but computed from `anchor` (a scalar) too."""
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    return x
  return jnp.where(jnp.isnan(anchor), jnp.asarray(jnp.nan, x.dtype), x)


def _anchor(cotangent) -> jax.Array:
  """One scalar of the (pytree) cotangent: the first element of its first float leaf."""
  for leaf in jax.tree.leaves(cotangent):
    if jnp.issubdtype(jnp.result_type(leaf), jnp.floating) and jnp.size(leaf):
      return jnp.ravel(leaf)[0]
  return jnp.zeros([], jnp.float32)


def _checkpoint_after_cotangent(fun: Callable) -> Callable:
  """`jax.checkpoint(fun)` for a pure `fun(params, rng, x)` (x a pytree) whose recomputation
  waits for the cotangent (see the module docstring)."""

  @jax.custom_vjp
  def pure(params, rng, x):
    return fun(params, rng, x)

  def forward(params, rng, x):
    return fun(params, rng, x), (params, rng, x)

  def backward(residuals, cotangent):
    params, rng, x = residuals
    anchor = _anchor(cotangent)
    _, vjp = jax.vjp(fun, params, rng, jax.tree.map(lambda a: _tie(a, anchor), x))
    return vjp(cotangent)

  pure.defvjp(forward, backward)
  return pure


def remat(module: hk.Module, fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn(*args)` (which calls `module`; args and results pytrees of arrays), rematerialised.

  Like `hk.remat(fn)`: the backward pass recomputes `fn`'s activations from `args`
  instead of keeping them. `fn` may read `module`'s parameters (names unchanged) and
  draw RNG keys, but not create Haiku state. During `init` it runs plainly.
  """

  @functools.wraps(fn)
  def wrapper(*args):
    if hk.running_init():
      return fn(*args)
    prefix = module.module_name + '/'
    params = {name: value for name, value in hk.get_params().items()
              if name == module.module_name or name.startswith(prefix)}
    inner = hk.transform(lambda args: fn(*args))
    checkpointed = _checkpoint_after_cotangent(
        lambda p, rng, args: inner.apply(p, rng, args))
    return checkpointed(params, hk.maybe_next_rng_key(), args)

  return wrapper
