"""Batches as deterministic functions of (seed, step), so a run's data position is its step.

Examples are drawn epoch by epoch: epoch e visits a permutation seeded by (seed, e), and the
j-th example of batch `step` is position step * batch_size + j of that endless stream.
"""

import functools
from typing import Iterator, Mapping

import numpy as np


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batch_indices(*, seed: int, step: int, batch_size: int, num_examples: int) -> np.ndarray:
  """Example indices int64 [batch_size] of batch `step`; every epoch sees each example once."""
  if num_examples < 1:
    raise ValueError(f'num_examples must be >= 1, got {num_examples}.')
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  if step < 0:
    raise ValueError(f'step must be >= 0, got {step}.')
  positions = step * batch_size + np.arange(batch_size)
  epochs, offsets = np.divmod(positions, num_examples)
  indices = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    sel = epochs == epoch
    indices[sel] = _epoch_permutation(seed, int(epoch), num_examples)[offsets[sel]]
  return indices


def step_rng(seed: int, step: int) -> np.random.Generator:
  """A numpy generator for host-side randomness (augmentation) of batch `step`."""
  return np.random.default_rng([seed, step, 1])


def sequential_batches(arrays: Mapping[str, np.ndarray],
                       batch_size: int) -> Iterator[dict]:
  """Consecutive batches of `arrays` (all [N, ...]); the last one may be short."""
  sizes = {k: len(v) for k, v in arrays.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f'arrays: leading sizes differ: {sizes}.')
  n = next(iter(sizes.values()))
  for start in range(0, n, batch_size):
    yield {k: v[start:start + batch_size] for k, v in arrays.items()}
