"""A single-core proxy of benchmarks/peer.py: one variant, one process, one thread.

    taskset -c 0 .venv/bin/python benchmarks/peer_single_core.py jax bfloat16 language_small 5
    taskset -c 0 .venv/bin/python benchmarks/peer_single_core.py torch bfloat16 language_small 5

FRAMEWORK (jax | torch), DTYPE (float32 | bfloat16: this library's bfloat16 compute, or
HF under `torch.autocast`), CONFIG (peer.CONFIGS), REPEATS. Builds peer.py's forward and
AdamW train step, calls them alternately REPEATS times after two warm-ups and prints one
JSON line of medians: wall time and process CPU time per call. Pin the process to one
core (`taskset -c 0`: XLA sizes its thread pool from the affinity mask; torch runs one
thread, `THREADS` to change it). On a machine shared with other work, the CPU times move
less than the wall times; run the variants back to back and compare within a round.
"""
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))

import peer  # pylint: disable=g-import-not-at-top
from perceiver_agents.kernels import host_memory  # pylint: disable=g-import-not-at-top


def functions(framework: str, dtype: str, name: str):
  """(forward, train_step) of `framework` as no-argument calls."""
  if framework == 'jax':
    run_forward, run_step, _, _ = peer.jax_functions(peer.CONFIGS[name], dtype)
    return run_forward, run_step
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(int(os.environ.get('THREADS', 1)))
  run_forward, run_step, _ = peer.torch_functions(peer.CONFIGS[name],
                                                  autocast=dtype == 'bfloat16')
  return run_forward, run_step


def main():
  framework, dtype, name, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
  host_memory.keep_freed_memory()
  fns = dict(zip(('forward', 'train_step'), functions(framework, dtype, name)))
  for fn in fns.values():
    fn()
    fn()
  wall = {k: [] for k in fns}
  cpu = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      start_cpu, start = time.process_time(), time.perf_counter()
      fn()
      wall[k].append(time.perf_counter() - start)
      cpu[k].append(time.process_time() - start_cpu)
  print(json.dumps({'framework': framework, 'dtype': dtype, 'config': name,
                    'load_average': os.getloadavg()[0],
                    **{f'{k}_wall_s': statistics.median(v) for k, v in wall.items()},
                    **{f'{k}_cpu_s': statistics.median(v) for k, v in cpu.items()}}))


if __name__ == '__main__':
  main()
