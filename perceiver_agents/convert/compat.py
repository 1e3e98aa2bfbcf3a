"""transformers' `hidden_act='gelu'`: the zoo's models with an exact (erf) GELU.

The published models, and so the blocks' `ops.gelu`, use the tanh approximation of
GELU; transformers' Perceiver configs default to the exact one. `with_exact_gelu(model)`
runs `model`'s init and apply inside `ops.exact_gelu()`: same parameters, the exact
GELU in every MLP, nothing else changed.
"""

from typing import Union

import haiku as hk

from perceiver_agents.blocks import ops

Transform = Union[hk.Transformed, hk.TransformedWithState]


def with_exact_gelu(model: Transform) -> Transform:
  """`model` (an hk.Transformed or TransformedWithState) with exact-GELU MLPs."""

  def init(*args, **kwargs):
    with ops.exact_gelu():
      return model.init(*args, **kwargs)

  def apply(*args, **kwargs):
    with ops.exact_gelu():
      return model.apply(*args, **kwargs)

  return type(model)(init=init, apply=apply)
