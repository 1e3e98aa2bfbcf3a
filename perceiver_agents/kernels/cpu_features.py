"""Whether this CPU has bfloat16 matrix units (AVX-512 BF16 or AMX), for
`train.compute_dtype=bfloat16`.

With them, XLA:CPU multiplies bfloat16 operands with float32 accumulation about twice as
fast as float32 (blocks/ops.py asks for exactly that product). Without them XLA emulates bfloat16 products in float32 plus conversions,
and bfloat16 compute is slower than float32: `warn_if_bf16_is_slow` says so.
"""
import functools
import logging
from typing import FrozenSet

BF16_FLAGS = ('avx512_bf16', 'amx_bf16')


@functools.lru_cache(maxsize=None)
def cpu_flags(path: str = '/proc/cpuinfo') -> FrozenSet[str]:
  """The feature flags of the first CPU in `path` (empty where it cannot be read)."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith('flags'):
          return frozenset(line.split(':', 1)[1].split())
  except OSError:
    pass
  return frozenset()


def bf16_units(flags: FrozenSet[str] = None) -> FrozenSet[str]:
  """Which of AVX-512 BF16 ('avx512_bf16') and AMX ('amx_bf16') the CPU has."""
  flags = cpu_flags() if flags is None else flags
  return frozenset(f for f in BF16_FLAGS if f in flags)


def warn_if_bf16_is_slow(backend: str) -> bool:
  """On a CPU backend without bfloat16 units, logs a warning; returns whether it did."""
  if backend != 'cpu' or bf16_units():
    return False
  logging.warning(
      'train.compute_dtype=bfloat16 on a CPU without AVX-512 BF16 or AMX (no avx512_bf16 '
      'or amx_bf16 in /proc/cpuinfo): bfloat16 products are emulated and the step will be '
      'slower than float32; use train.compute_dtype=float32 here (docs/performance.md).')
  return True
