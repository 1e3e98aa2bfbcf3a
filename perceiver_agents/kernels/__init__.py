"""The speed work behind blocks/ops.py: CPU GEMM kernel, hand-written backward passes,
fusion boundaries, rematerialisation, host memory.

Model files never import this room directly; they call blocks/ops.py, which picks one of
two implementations of every operation:

  'reference'  hk.Linear, hk.LayerNorm, plain jnp and hk.remat: no custom VJPs, what a
               reader of the model expects.
  'fast'       the same values through the kernels here (the default).

The choice is read when a function is traced: `use('reference')` (a context manager),
else the environment variable PERCEIVER_AGENTS_KERNELS=reference|fast, else 'fast'.
The learner sets it from `config.train.kernels`. JAX caches traces per function object,
so a function jitted under one choice keeps it; trace a fresh function to switch.
"""
import contextlib
import os
import threading
from typing import Iterator, Optional

IMPLEMENTATIONS = ('reference', 'fast')
ENV_VAR = 'PERCEIVER_AGENTS_KERNELS'

_local = threading.local()


def check(kernels: str, *, name: str = 'kernels') -> str:
  """`kernels` if it names an implementation, else ValueError naming `name`."""
  if kernels not in IMPLEMENTATIONS:
    raise ValueError(f'{name} must be one of {", ".join(map(repr, IMPLEMENTATIONS))}, '
                     f'got {kernels!r}.')
  return kernels


def current() -> str:
  """The implementation blocks/ops.py uses now: innermost `use`, else $ENV_VAR, else 'fast'."""
  chosen: Optional[str] = getattr(_local, 'kernels', None)
  if chosen is not None:
    return chosen
  return check(os.environ.get(ENV_VAR, 'fast'), name=ENV_VAR)


@contextlib.contextmanager
def use(kernels: str) -> Iterator[None]:
  """Functions traced inside run blocks/ops.py's `kernels` implementation."""
  check(kernels)
  previous = getattr(_local, 'kernels', None)
  _local.kernels = kernels
  try:
    yield
  finally:
    _local.kernels = previous
