"""Where a bfloat16 train step's products run: benchmarks/peer.py's JAX forward and step,
compiled in float32, in bfloat16 compute, and in bfloat16 with XLA's products only (no
oneDNN kernel), with each compiled step's products counted by kind, then all timed in
turn in one process (wall clock and process CPU time).

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
from perceiver_agents.kernels import cpu_gemm  # pylint: disable=g-import-not-at-top
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


VARIANTS = ('float32', 'bfloat16', 'bfloat16, XLA products')


def measure(name: str, repeats: int) -> dict:
  """Wall and CPU seconds per forward and train step of each VARIANTS entry, called in
  turn; 'bfloat16, XLA products' is traced without the oneDNN kernels (the layouts of
  cpu_gemm.half_precision_einsum), so the two bfloat16 rows differ by those alone."""
  programs, counts = {}, {}
  has_kernel = cpu_gemm.has_bfloat16_kernel
  try:
    for variant in VARIANTS:
      dtype = variant.split(',')[0]
      if variant.endswith('XLA products'):
        cpu_gemm.has_bfloat16_kernel = lambda: False
      (forward, f_args), (train_step, s_args), _ = peer.jax_step_functions(
          peer.CONFIGS[name], dtype)
      step = jax.jit(train_step).lower(*s_args).compile()
      counts[variant] = dot_operand_types(step.as_text())
      programs[(variant, 'forward')] = (jax.jit(forward).lower(*f_args).compile(), f_args)
      programs[(variant, 'step')] = (step, s_args)
  finally:
    cpu_gemm.has_bfloat16_kernel = has_kernel
  wall = {k: [] for k in programs}
  cpu = {k: [] for k in programs}
  for fn, args in programs.values():
    jax.block_until_ready(fn(*args))  # warm-up
  for _ in range(repeats):
    for key, (fn, args) in programs.items():
      start_cpu, start = time.process_time(), time.perf_counter()
      jax.block_until_ready(fn(*args))
      wall[key].append(time.perf_counter() - start)
      cpu[key].append(time.process_time() - start_cpu)
  med = statistics.median
  return {'config': name, 'dots': counts,
          'wall_s': {k: med(v) for k, v in wall.items()},
          'cpu_s': {k: med(v) for k, v in cpu.items()}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', nargs='+', default=['language_small', 'image_small'],
                      choices=sorted(peer.CONFIGS))
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  host_memory.keep_freed_memory()
  print(f'load average at start: {os.getloadavg()[0]:.1f}\n')
  print('| config | variant | oneDNN products | bf16 x bf16 dots | f32 x f32 dots | '
        'forward (wall) | train step (wall) | train step (CPU time) | '
        'speed-up vs float32 (fwd, step) |')
  print('|---|---|---|---|---|---|---|---|---|')
  for name in args.configs:
    r = measure(name, args.repeats)
    w, c = r['wall_s'], r['cpu_s']
    for variant in VARIANTS:
      d = r['dots'][variant]
      print(f"| {name} | {variant} | {d.get('oneDNN', 0)} | {d.get('bf16 x bf16', 0)} | "
            f"{d.get('f32 x f32', 0)} | {w[(variant, 'forward')] * 1e3:.1f} ms | "
            f"{w[(variant, 'step')] * 1e3:.0f} ms | {c[(variant, 'step')] * 1e3:.0f} ms | "
            f"{w[('float32', 'forward')] / w[(variant, 'forward')]:.2f}x, "
            f"{w[('float32', 'step')] / w[(variant, 'step')]:.2f}x |", flush=True)


if __name__ == '__main__':
  main()
