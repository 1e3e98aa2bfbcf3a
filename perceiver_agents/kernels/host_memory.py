"""Keeps freed host memory in the process, so XLA:CPU's buffers are not faulted in anew.

XLA:CPU allocates every call's output and temporary buffers with malloc. With glibc's
defaults, a large allocation (above the mmap threshold, 32 MiB at most) or one made on
a worker thread's own arena is mapped fresh and unmapped when freed, so each training
step touches its buffers for the first time again and the kernel zeroes every page on a
fault: tens of thousands of minor page faults and a large share of system time per
train step (BENCHMARKS.md measures it with `benchmarks/peer.py`).

`keep_freed_memory()` sets three glibc malloc options for the whole process:
M_MMAP_MAX 0 (no separately mapped chunks), M_TRIM_THRESHOLD -1 (never give the top of
the heap back) and M_ARENA_MAX 1 (every thread allocates from the main heap, which grows
without a size limit). Freed buffers are then reused by the next step; the process keeps
its peak heap, as a framework's caching allocator would. M_ARENA_MAX only reaches
threads that have not allocated yet, so call it first thing, before JAX starts its
backend (`perceiver-agents` does). Elsewhere than glibc (macOS, musl) it does nothing;
PERCEIVER_AGENTS_KEEP_HOST_MEMORY=0 switches it off.
"""

import ctypes
import ctypes.util
import logging
import os
import platform
import sys

_SWITCH = 'PERCEIVER_AGENTS_KEEP_HOST_MEMORY'
# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_memory() -> bool:
  """Sets the malloc options above; True if they were set (glibc, not switched off)."""
  if os.environ.get(_SWITCH, '1') == '0' or platform.libc_ver()[0] != 'glibc':
    return False
  if _jax_backend_started():
    logging.warning('host_memory.keep_freed_memory() was called after JAX started its '
                    'backend: threads that already allocated keep their own arenas. '
                    'Call it before the first JAX computation.')
  libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
  # Each option is set even if another one is refused (mallopt returns 1 on success).
  done = [libc.mallopt(option, value) == 1 for option, value in (
      (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_ARENA_MAX, 1))]
  return all(done)


def _jax_backend_started() -> bool:
  if 'jax' not in sys.modules:  # Not imported yet: nothing started (and no import here).
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # A JAX without this (private) query.
    return False
