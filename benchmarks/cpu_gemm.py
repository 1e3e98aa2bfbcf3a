"""XLA:CPU's products against kernels/cpu_gemm.py's OpenBLAS kernel, side by side.

    .venv/bin/python benchmarks/cpu_gemm.py [--repeats 30] [--steps language_small]
        [--step_repeats 10]

Rows 1-2: the backward products the kernel takes over, on the language_small shapes of
benchmarks/peer.py: the weight gradients X^T G of its dense layers and the attention's
backward products (dV = P^T dO, dK = dS^T Q with a transposed operand; dP = dO V^T,
dQ = dS K), each timed as XLA's `jnp.einsum` and as `cpu_gemm.einsum` (alternating), and
afterwards as torch (when installed) on the same arrays; medians of --repeats calls.
Last rows: whole training steps (benchmarks/peer.py's, forward + backward + AdamW)
compiled twice in one process, with the kernel and with XLA only, called alternately
--step_repeats times: the ratio is the kernel's effect on the step.
"""

import argparse
import os
import statistics
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))

from perceiver_agents.kernels import host_memory  # pylint: disable=g-import-not-at-top

host_memory.keep_freed_memory()  # As `perceiver-agents` and peer.py run (host_memory).

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

import peer  # pylint: disable=g-import-not-at-top
from perceiver_agents.kernels import cpu_gemm  # pylint: disable=g-import-not-at-top

# (what, subscripts, x shape, y shape): language_small, batch 8 x 512 bytes, 128 x 512
# latents, 8 heads (encoder cross-attention D = 32 / Dv = 64, latent self-attention 64).
PRODUCTS = [
    ('weight gradient, latent dense', 'rk,rn->kn', (1024, 512), (1024, 512)),
    ('weight gradient, input dense', 'rk,rn->kn', (4096, 256), (4096, 512)),
    ('self-attention dV = P^T dO', 'bhqk,bhqd->bhkd', (8, 8, 128, 128), (8, 8, 128, 64)),
    ('self-attention dP = dO V^T', 'bhqd,bhkd->bhqk', (8, 8, 128, 64), (8, 8, 128, 64)),
    ('cross-attention dV = P^T dO', 'bhqk,bhqd->bhkd', (8, 8, 128, 512), (8, 8, 128, 64)),
    ('cross-attention dK = dS^T Q', 'bhqk,bhqd->bhkd', (8, 8, 128, 512), (8, 8, 128, 32)),
    ('cross-attention dQ = dS K', 'bhqk,bhkd->bhqd', (8, 8, 128, 512), (8, 8, 512, 32)),
    ('decoder dP = dO V^T', 'bhqd,bhkd->bhqk', (8, 8, 512, 32), (8, 8, 128, 32)),
]


def _medians(fns, repeats):
  """Median seconds of each zero-argument function, called in turn (peer.alternate)."""
  times = peer.alternate(dict(enumerate(fns)), repeats)
  return [statistics.median(times[i]) for i in range(len(fns))]


def _flops(subscripts, x_shape, y_shape):
  xs, ys = subscripts.split('->')[0].split(',')
  size = dict(zip(xs, x_shape))
  size.update(zip(ys, y_shape))
  return 2.0 * np.prod([float(v) for v in size.values()])


def products(repeats):
  """Rows for PRODUCTS. torch runs after every JAX timing: its idle OpenMP threads spin
  for a while after each call and slowed whatever ran next (XLA and the kernel alike)."""
  rng = np.random.RandomState(0)
  arrays, jax_times, diffs = [], [], []
  for _, subscripts, x_shape, y_shape in PRODUCTS:
    x = rng.randn(*x_shape).astype(np.float32)
    y = rng.randn(*y_shape).astype(np.float32)
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    xla = jax.jit(lambda a, b, s=subscripts: jnp.einsum(s, a, b))
    kernel = jax.jit(lambda a, b, s=subscripts: cpu_gemm.einsum(s, a, b))
    diffs.append(float(jnp.max(jnp.abs(xla(jx, jy) - kernel(jx, jy)))))
    jax_times.append(_medians([lambda: xla(jx, jy).block_until_ready(),
                               lambda: kernel(jx, jy).block_until_ready()], repeats))
    arrays.append((x, y))
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch_times = [_medians([lambda s=s, x=torch.from_numpy(x), y=torch.from_numpy(y):
                             torch.einsum(s, x, y)], repeats)[0]
                   for (_, s, _, _), (x, y) in zip(PRODUCTS, arrays)]
  except ImportError:
    torch_times = [None] * len(PRODUCTS)
  rows = []
  for (what, subscripts, x_shape, y_shape), (xla_t, kernel_t), torch_t, diff in zip(
      PRODUCTS, jax_times, torch_times, diffs):
    gflop = _flops(subscripts, x_shape, y_shape) / 1e9
    rate = lambda t: '-' if t is None else f'{t * 1e3:.2f} ms ({gflop / t:.0f} GFLOP/s)'
    rows.append((what, f'`{subscripts}` {list(x_shape)} x {list(y_shape)}', rate(xla_t),
                 rate(kernel_t), f'{xla_t / kernel_t:.2f}x', rate(torch_t), f'{diff:.1e}'))
  return rows


def steps(configs, repeats):
  rows = []
  for name in configs:
    with cpu_gemm.xla_only():
      _, xla_step, _, _ = peer.jax_functions(peer.CONFIGS[name])
    _, kernel_step, _, _ = peer.jax_functions(peer.CONFIGS[name])
    times = _medians([xla_step, kernel_step], repeats)
    rows.append((f'{name} train step', 'benchmarks/peer.py, AdamW',
                 f'{times[0]:.3f} s', f'{times[1]:.3f} s',
                 f'{times[0] / times[1]:.2f}x', '-', '-'))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=30)
  parser.add_argument('--steps', nargs='*', default=['language_small'])
  parser.add_argument('--step_repeats', type=int, default=10)
  args = parser.parse_args()
  if not cpu_gemm.enabled():
    sys.exit('cpu_gemm: the OpenBLAS kernel is not available here (see the warning).')
  step_rows = steps(args.steps, args.step_repeats)  # before torch is imported
  rows = products(args.repeats) + step_rows
  print(f'device: cpu, {os.cpu_count()} cores\n')
  print('| product | subscripts, shapes | XLA | OpenBLAS kernel | speed-up | torch | '
        'max abs diff |')
  print('|---|---|---|---|---|---|---|')
  for row in rows:
    print('| ' + ' | '.join(row) + ' |')


if __name__ == '__main__':
  main()
