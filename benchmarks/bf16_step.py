"""Where a bfloat16 train step's products run: benchmarks/peer.py's JAX step, compiled
in float32 and in bfloat16 compute, with each compiled dot's operand dtypes, then both
steps timed alternately in one process (wall clock and process CPU time).

    .venv/bin/python benchmarks/bf16_step.py [--configs language_small image_small] [--repeats 5]

XLA:CPU converts the bfloat16 operands of a dot it cannot run in bfloat16 to float32
(kernels/cpu_gemm.py's half_precision_einsum says which); the 'f32 x f32 dots' column
counts such dots in the bfloat16 step, the 'oneDNN' column the products that went to the
oneDNN kernel instead (the float32 step's own products are float32, or
custom calls to the OpenBLAS kernel, which are not dots). CPU time is the process's user
+ system time per step (both XLA threads): on a machine shared with other work it moves
less than wall time. For the comparison against PyTorch, use benchmarks/peer.py.
"""
import argparse
import os
import re
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))

import jax  # pylint: disable=g-import-not-at-top

import peer  # pylint: disable=g-import-not-at-top
from perceiver_agents.kernels import host_memory  # pylint: disable=g-import-not-at-top


def dot_operand_types(compiled_text: str) -> dict:
  """{'bf16 x bf16': count, 'f32 x f32': count, ..., 'oneDNN': count} over the compiled
  module's dots, and its calls to the oneDNN bfloat16 kernels (kernels/cpu_gemm.py)."""
  types = dict(re.findall(r'%([\w.\-]+) = (\w+)\[', compiled_text))
  counts = {}
  for lhs, rhs in re.findall(r' dot\(%([\w.\-]+), %([\w.\-]+)\)', compiled_text):
    key = f'{types[lhs]} x {types[rhs]}'
    counts[key] = counts.get(key, 0) + 1
  onednn = len(re.findall(r'custom_call_target="pa_(?:strided_gemm|dense)_bf16"',
                          compiled_text))
  if onednn:
    counts['oneDNN'] = onednn
  return counts


def measure(name: str, repeats: int) -> dict:
  steps, counts = {}, {}
  for dtype in ('float32', 'bfloat16'):
    _, (train_step, args), _ = peer.jax_step_functions(peer.CONFIGS[name], dtype)
    compiled = jax.jit(train_step).lower(*args).compile()
    counts[dtype] = dot_operand_types(compiled.as_text())
    steps[dtype] = (compiled, args)
  wall = {d: [] for d in steps}
  cpu = {d: [] for d in steps}
  for dtype, (fn, args) in steps.items():
    jax.block_until_ready(fn(*args))  # warm-up
  for _ in range(repeats):
    for dtype, (fn, args) in steps.items():
      start_cpu, start = time.process_time(), time.perf_counter()
      jax.block_until_ready(fn(*args))
      wall[dtype].append(time.perf_counter() - start)
      cpu[dtype].append(time.process_time() - start_cpu)
  med = lambda xs: statistics.median(xs)
  return {'config': name, 'dots': counts,
          'wall_s': {d: med(v) for d, v in wall.items()},
          'cpu_s': {d: med(v) for d, v in cpu.items()}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', nargs='+', default=['language_small', 'image_small'],
                      choices=sorted(peer.CONFIGS))
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  host_memory.keep_freed_memory()
  print(f'load average at start: {os.getloadavg()[0]:.1f}\n')
  print('| config | bf16 step: oneDNN products | bf16 x bf16 dots | f32 x f32 dots | '
        'train step f32 / bf16 (wall) | f32 / bf16 (CPU time) | speed-up wall, CPU |')
  print('|---|---|---|---|---|---|---|')
  for name in args.configs:
    r = measure(name, args.repeats)
    d, w, c = r['dots']['bfloat16'], r['wall_s'], r['cpu_s']
    print(f"| {name} | {d.get('oneDNN', 0)} | {d.get('bf16 x bf16', 0)} | "
          f"{d.get('f32 x f32', 0)} | "
          f"{w['float32']:.3f} / {w['bfloat16']:.3f} s | "
          f"{c['float32']:.3f} / {c['bfloat16']:.3f} s | "
          f"{w['float32'] / w['bfloat16']:.2f}x, {c['float32'] / c['bfloat16']:.2f}x |",
          flush=True)


if __name__ == '__main__':
  main()
