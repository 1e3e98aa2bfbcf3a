"""Tests of perceiver_agents/kernels/host_memory.py, each in a fresh process (its settings are
process-wide and must come before JAX starts)."""
import json
import os
import platform
import subprocess
import sys

import pytest

from perceiver_agents.kernels import host_memory

_GLIBC = platform.libc_ver()[0] == 'glibc'

# Faults per call of a jitted attention-like gradient whose temporaries (288 MiB) are
# allocated and freed on every call.
_PROGRAM = '''
import json, resource, sys
from perceiver_agents.kernels import host_memory
kept = host_memory.keep_freed_memory() if sys.argv[1] == 'keep' else None
import jax, jax.numpy as jnp
x = jnp.ones((256, 1024, 64), jnp.float32)
f = jax.jit(jax.grad(lambda x: jnp.sum(jax.nn.softmax(
    jnp.einsum('bqd,bkd->bqk', x[:, :256], x), axis=-1))))
for _ in range(2):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
  f(x).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3
print(json.dumps({'kept': kept, 'faults': faults}))
'''


def _run(*args, env=None, program=_PROGRAM):
  done = subprocess.run([sys.executable, '-c', program, *args], capture_output=True,
                        text=True, env=dict(os.environ, **(env or {})), check=True)
  return done


@pytest.mark.skipif(not _GLIBC, reason='glibc malloc options')
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
  default = json.loads(_run('default').stdout.splitlines()[-1])
  kept = json.loads(_run('keep').stdout.splitlines()[-1])
  assert kept['kept'] is True
  # Measured: ~309,000 faults per call by default, ~30,000 with the options.
  assert default['faults'] > 50_000
  assert kept['faults'] < default['faults'] / 4


def test_switched_off_by_the_environment(monkeypatch):
  monkeypatch.setenv('PERCEIVER_AGENTS_KEEP_HOST_MEMORY', '0')
  assert host_memory.keep_freed_memory() is False  # Returns before touching malloc.


@pytest.mark.skipif(not _GLIBC, reason='glibc malloc options')
def test_a_call_after_jax_started_warns():
  done = _run(program=(
      'import jax; jax.devices()\n'
      'from perceiver_agents.kernels import host_memory\n'
      'print(host_memory.keep_freed_memory())\n'))
  assert done.stdout.strip() == 'True'
  assert 'after JAX started its backend' in done.stderr
