"""blocks.attend: jax.nn.dot_product_attention (cuDNN flash attention on GPU) vs XLA.

    .venv/bin/python benchmarks/attention_kernels.py [--json FILE]
    .venv/bin/python benchmarks/attention_kernels.py --table_from FILE...  # saved runs

For each shape and dtype, times `attend(..., implementation=...)` forward and forward +
backward (median of --repeats runs, compiled) for XLA's matmul path, JAX's own pick and,
on a GPU in bfloat16, forced cuDNN flash attention; checks that they agree with the XLA
path, and checks the masked-row contract on each: a query row whose keys are all masked
gives exactly zero and finite gradients. An implementation that fails (e.g. a shape
cuDNN does not take) is reported with its error. On a CPU the shapes are small (the
point there is the agreement and which path `auto` should pick); on a GPU they are
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

def implementations(dtype) -> tuple:
  """XLA's path, JAX's own pick, and on a GPU in half precision forced cuDNN."""
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  gpu = jax.default_backend() == 'gpu'
  return ('xla', 'dot_product_attention') + (('cudnn',) if gpu and half else ())


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
  """Times and checks of each implementation; one that fails records its error."""
  batch, q_len, kv_len, heads, width = shape
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  q = jax.random.normal(keys[0], (batch, q_len, heads, width), dtype)
  k = jax.random.normal(keys[1], (batch, kv_len, heads, width), dtype)
  v = jax.random.normal(keys[2], (batch, kv_len, heads, width), dtype)
  mask = jax.random.uniform(keys[3], (batch, q_len, kv_len)) > 0.1
  mask = mask.at[0, 0, :].set(False)  # One query row with no visible key.
  result = {'shape': shape, 'dtype': jnp.dtype(dtype).name}
  reference = None
  for impl in implementations(dtype):
    # The mask is an argument: closed over, it would be a constant that XLA spends
    # seconds of every compile folding at the larger shapes.
    forward = jax.jit(lambda q, k, v, mask, impl=impl: attention.attend(
        q, k, v, attention_mask=mask, implementation=impl))
    grad = jax.jit(jax.grad(lambda q, k, v, mask, impl=impl: jnp.sum(attention.attend(
        q, k, v, attention_mask=mask, implementation=impl).astype(jnp.float32) ** 2),
                            argnums=(0, 1, 2)))
    try:
      out = forward(q, k, v, mask).astype(jnp.float32)
      grads = grad(q, k, v, mask)
      result[impl] = {
          'forward_ms': 1e3 * _time(forward, q, k, v, mask, repeats=repeats),
          'forward_backward_ms': 1e3 * _time(grad, q, k, v, mask, repeats=repeats),
          'empty_row_zero': bool(jnp.all(out[0, 0] == 0)),
          'grads_finite': bool(all(jnp.all(jnp.isfinite(g)) for g in grads)),
      }
    except Exception as error:  # pylint: disable=broad-except
      result[impl] = {'error': f'{type(error).__name__}: {str(error)[:200]}'}
      continue
    if reference is None:
      reference = out
    else:
      result[impl]['max_abs_diff'] = float(jnp.max(jnp.abs(out - reference)))
  return result


def table(results) -> str:
  names = ('xla', 'dot_product_attention', 'cudnn')
  lines = ['| [B, Q, K, H, D] | dtype | XLA fwd / fwd+bwd | dot_product_attention fwd / '
           'fwd+bwd (speed-up) | cudnn fwd / fwd+bwd (speed-up) | max abs diff vs XLA | '
           'empty rows zero, grads finite |', '|---|---|---|---|---|---|---|']
  for r in results:
    x = r['xla']
    cells = [str(list(r['shape'])), r['dtype'],
             f"{x['forward_ms']:.2f} / {x['forward_backward_ms']:.2f} ms"]
    diffs, ok = [], [x['empty_row_zero'], x['grads_finite']]
    for name in names[1:]:
      d = r.get(name)
      if d is None:
        cells.append('-')
      elif 'error' in d:
        cells.append(f"failed: {d['error'][:80]}")
      else:
        cells.append(f"{d['forward_ms']:.2f} / {d['forward_backward_ms']:.2f} ms "
                     f"({x['forward_ms'] / d['forward_ms']:.2f}x, "
                     f"{x['forward_backward_ms'] / d['forward_backward_ms']:.2f}x)")
        diffs.append(f"{d['max_abs_diff']:.1e}")
        ok = [ok[0] and d['empty_row_zero'], ok[1] and d['grads_finite']]
    cells += [', '.join(diffs), f'{ok[0]}, {ok[1]}']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--json', default=None)
  parser.add_argument('--table_from', nargs='+', metavar='JSON',
                      help='print the table of saved results (e.g. a GPU run) instead')
  args = parser.parse_args()
  if args.table_from:
    results, devices = [], []
    for path in args.table_from:
      with open(path) as f:
        saved = json.load(f)
      results += saved['results']
      devices.append(saved['device'])
    print(f"device: {', '.join(sorted(set(devices)))}\n")
    print(table(results))
    return
  results = []
  dtypes = (jnp.bfloat16, jnp.float32) if jax.default_backend() == 'gpu' else (
      jnp.float32,)
  for shape in shapes():
    for dtype in dtypes:
      results.append(measure(shape, dtype, args.repeats))
      print(json.dumps(results[-1]), flush=True)
      if args.json:  # After each row: a run cut short keeps what it measured.
        with open(args.json, 'w') as f:
          json.dump({'device': jax.devices()[0].device_kind, 'results': results}, f,
                    indent=1)
  print(f'\ndevice: {jax.devices()[0].device_kind}\n')
  print(table(results))


if __name__ == '__main__':
  main()
