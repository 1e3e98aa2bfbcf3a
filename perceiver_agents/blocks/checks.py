"""Input checks shared by the blocks.

Every check raises `ValueError` naming the offending argument and stating what was
expected, so that a bad input fails once, clearly, before any compilation.
"""
from typing import Optional, Sequence

import numpy as np


def check_rank(x, rank: int, *, name: str) -> None:
  """Raises ValueError unless `x` has exactly `rank` dimensions."""
  if np.ndim(x) != rank:
    raise ValueError(
        f'{name} must have rank {rank}, got shape {tuple(np.shape(x))}.')


def check_divisible(channels: int, heads: int, *, name: str,
                    heads_name: str = 'num_heads') -> None:
  """Raises ValueError unless `channels` splits evenly into `heads`."""
  if heads <= 0:
    raise ValueError(f'{heads_name} must be positive, got {heads}.')
  if channels % heads != 0:
    raise ValueError(f'{name} ({channels}) must be divisible by '
                     f'{heads_name} ({heads}).')


def check_mask(mask, shape: Sequence[int], *, name: str) -> None:
  """Raises ValueError unless `mask` has exactly `shape`."""
  if tuple(np.shape(mask)) != tuple(shape):
    raise ValueError(f'{name} must have shape {tuple(shape)}, '
                     f'got {tuple(np.shape(mask))}.')


def check_choice(value, choices: Sequence[str], *, name: str) -> None:
  """Raises ValueError unless `value` is one of `choices`."""
  if value not in choices:
    raise ValueError(f'Unknown {name} {value!r}; expected one of '
                     f'{", ".join(map(repr, choices))}.')


def check_positive(value: Optional[int], *, name: str) -> None:
  if value is not None and value <= 0:
    raise ValueError(f'{name} must be positive, got {value}.')


def check_floating(x, *, name: str) -> None:
  """Raises ValueError unless `x` holds floating-point values (activations, queries)."""
  dtype = np.dtype(x.dtype if hasattr(x, 'dtype') else np.asarray(x).dtype)
  if not (np.issubdtype(dtype, np.floating) or dtype.name == 'bfloat16'):
    raise ValueError(f'{name} must be a floating-point array, got dtype {dtype.name}.')
