"""transformers' `hidden_act='gelu'`: the zoo's models with an exact (erf) GELU.

The published models, and so blocks.attention.MLP, use the tanh approximation of GELU;
transformers' Perceiver configs default to the exact one. `with_exact_gelu(model)`
runs `model`'s init and apply under a Haiku method interceptor that computes each MLP
with the exact GELU: same parameters (the MLP's own two linears, same names), nothing
else changed.
"""

from typing import Any, Union

import haiku as hk
import jax

from perceiver_agents.blocks import attention

Transform = Union[hk.Transformed, hk.TransformedWithState]


def _exact_gelu_mlp(next_f, args, kwargs, context: hk.MethodContext) -> Any:
  """MLP.__call__ with jax.nn.gelu(approximate=False); other methods untouched."""
  mlp = context.module
  if not isinstance(mlp, attention.MLP) or context.method_name != '__call__':
    return next_f(*args, **kwargs)
  (x,), is_training = args, kwargs['is_training']
  channels = x.shape[-1]
  # The body of attention.MLP.__call__ (same submodules in the same order, so the
  # same parameter names), with the exact GELU.
  x = attention.linear(mlp._widening_factor * channels, init_scale=mlp._init_scale)(x)  # pylint: disable=protected-access
  x = jax.nn.gelu(x, approximate=False)
  x = attention.linear(channels, init_scale=mlp._init_scale)(x)  # pylint: disable=protected-access
  if is_training and mlp._dropout_prob > 0:  # pylint: disable=protected-access
    x = hk.dropout(hk.next_rng_key(), mlp._dropout_prob, x)  # pylint: disable=protected-access
  return x


def with_exact_gelu(model: Transform) -> Transform:
  """`model` (an hk.Transformed or TransformedWithState) with exact-GELU MLPs."""

  def init(*args, **kwargs):
    with hk.intercept_methods(_exact_gelu_mlp):
      return model.init(*args, **kwargs)

  def apply(*args, **kwargs):
    with hk.intercept_methods(_exact_gelu_mlp):
      return model.apply(*args, **kwargs)

  return type(model)(init=init, apply=apply)
