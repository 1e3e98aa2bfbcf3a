"""The attention-mask conventions every attention path shares.

Masked logits get a large finite negative value, not -inf (so a row whose every key is
masked stays NaN-free), and such a row's output is set to exactly zero afterwards
(otherwise it would be a uniform average of the values).
"""
from typing import Optional

import jax
import jax.numpy as jnp


def mask_logits(logits: jax.Array, allowed: jax.Array) -> jax.Array:
  """`logits` where `allowed` (broadcastable, truthy = attend), a large negative elsewhere."""
  large = 1e4 if logits.dtype == jnp.float16 else 1e30
  return jnp.where(allowed, logits, jnp.asarray(-large, logits.dtype))


def zero_empty_rows(out: jax.Array, attention_mask: Optional[jax.Array]) -> jax.Array:
  """Sets the rows of out [B, Q, C] whose keys are all masked in [B, Q, K] to zero."""
  if attention_mask is None:
    return out
  empty_row = jnp.all(~attention_mask.astype(bool), axis=2, keepdims=True)
  return jnp.where(empty_row, jnp.zeros_like(out), out)
