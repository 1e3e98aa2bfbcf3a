"""blocks.attend: jax.nn.dot_product_attention (cuDNN flash attention on GPU) vs XLA.

    .venv/bin/python benchmarks/attention_kernels.py [--json FILE]

For each shape and dtype, times `attend(..., implementation=...)` forward and forward +
backward (median of alternating runs, compiled), checks both implementations agree, and
checks the masked-row contract on the fused path: a query row whose keys are all masked
gives exactly zero and finite gradients. On a CPU the shapes are small (the point there
is the agreement and which path `auto` should pick); on a GPU they are
sequence-length 1k-8k self-attention blocks in bfloat16 and float32. Prints a markdown
table.
"""

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position

from perceiver_agents.blocks import attention  # pylint: disable=wrong-import-position

IMPLEMENTATIONS = ('xla', 'dot_product_attention')


def shapes():
  """(batch, queries, keys, heads, head width) per platform."""
  if jax.default_backend() == 'gpu':
    return [(8, 1024, 1024, 8, 64), (4, 4096, 4096, 8, 64), (1, 8192, 8192, 8, 128),
            (8, 512, 8192, 8, 64)]  # The last: latents cross-attending a long input.
  return [(8, 128, 512, 8, 64), (8, 128, 128, 8, 64)]


def _time(fn, *args, repeats):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure(shape, dtype, repeats: int) -> dict:
  batch, q_len, kv_len, heads, width = shape
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  q = jax.random.normal(keys[0], (batch, q_len, heads, width), dtype)
  k = jax.random.normal(keys[1], (batch, kv_len, heads, width), dtype)
  v = jax.random.normal(keys[2], (batch, kv_len, heads, width), dtype)
  mask = jax.random.uniform(keys[3], (batch, q_len, kv_len)) > 0.1
  mask = mask.at[0, 0, :].set(False)  # One query row with no visible key.
  result = {'shape': shape, 'dtype': jnp.dtype(dtype).name}
  outputs = {}
  for impl in IMPLEMENTATIONS:
    forward = jax.jit(lambda q, k, v, impl=impl: attention.attend(
        q, k, v, attention_mask=mask, implementation=impl))
    grad = jax.jit(jax.grad(lambda q, k, v, impl=impl: jnp.sum(attention.attend(
        q, k, v, attention_mask=mask, implementation=impl).astype(jnp.float32) ** 2),
                            argnums=(0, 1, 2)))
    outputs[impl] = forward(q, k, v)
    grads = grad(q, k, v)
    result[impl] = {
        'forward_ms': 1e3 * _time(forward, q, k, v, repeats=repeats),
        'forward_backward_ms': 1e3 * _time(grad, q, k, v, repeats=repeats),
        'empty_row_zero': bool(jnp.all(outputs[impl][0, 0] == 0)),
        'grads_finite': bool(all(jnp.all(jnp.isfinite(g)) for g in grads)),
    }
  result['max_abs_diff'] = float(jnp.max(jnp.abs(
      outputs['xla'].astype(jnp.float32) -
      outputs['dot_product_attention'].astype(jnp.float32))))
  return result


def table(results) -> str:
  lines = ['| [B, Q, K, H, D] | dtype | XLA fwd / fwd+bwd | dot_product_attention fwd / '
           'fwd+bwd | speed-up (fwd, fwd+bwd) | max abs diff | empty rows zero, grads '
           'finite |', '|---|---|---|---|---|---|---|']
  for r in results:
    x, d = r['xla'], r['dot_product_attention']
    lines.append(
        f"| {list(r['shape'])} | {r['dtype']} | {x['forward_ms']:.2f} / "
        f"{x['forward_backward_ms']:.2f} ms | {d['forward_ms']:.2f} / "
        f"{d['forward_backward_ms']:.2f} ms | "
        f"{x['forward_ms'] / d['forward_ms']:.2f}x, "
        f"{x['forward_backward_ms'] / d['forward_backward_ms']:.2f}x | "
        f"{r['max_abs_diff']:.1e} | {d['empty_row_zero'] and x['empty_row_zero']}, "
        f"{d['grads_finite'] and x['grads_finite']} |")
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  results = []
  dtypes = (jnp.bfloat16, jnp.float32) if jax.default_backend() == 'gpu' else (
      jnp.float32,)
  for shape in shapes():
    for dtype in dtypes:
      results.append(measure(shape, dtype, args.repeats))
      print(json.dumps(results[-1]), flush=True)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'device': jax.devices()[0].device_kind, 'results': results}, f,
                indent=1)
  print(f'\ndevice: {jax.devices()[0].device_kind}\n')
  print(table(results))


if __name__ == '__main__':
  main()
