"""Perceiver AR forward pass: time and peak memory against context length.

Each context length runs in its own subprocess (so peak RSS is its own): a jit-compiled
eval forward of a small-width model with M latents on one sequence, timed over --repeats
runs after one warm-up. Prints a table with time per 1k context tokens, whose growth
shows whether time grows faster than linearly.

    python benchmarks/perceiver_ar_scaling.py --contexts 8192 32768 131072
"""

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(context: int, args) -> dict:
  import haiku as hk  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from perceiver_agents.blocks.perceiver_ar import PerceiverAR  # pylint: disable=g-import-not-at-top
  kwargs = dict(vocab_size=256, max_context=context, num_latents=args.latents,
                num_channels=args.channels, num_heads=4, num_cross_heads=args.cross_heads,
                num_layers=args.layers, widening_factor=2)
  model = hk.transform(lambda t: PerceiverAR(**kwargs)(t, is_training=False))
  tokens = np.random.RandomState(0).randint(0, 256, (1, context)).astype(np.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)
  forward = jax.jit(model.apply)
  t0 = time.perf_counter()
  forward(params, None, tokens).block_until_ready()
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    forward(params, None, tokens).block_until_ready()
    times.append(time.perf_counter() - t0)
  return {'context': context, 'seconds': min(times), 'first_call_s': compile_s,
          'peak_rss_gib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--contexts', type=int, nargs='+', default=[8192, 32768, 131072])
  parser.add_argument('--latents', type=int, default=1024)
  parser.add_argument('--channels', type=int, default=64)
  parser.add_argument('--cross-heads', type=int, default=1)
  parser.add_argument('--layers', type=int, default=2)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--child', type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(args.child, args)))
    return 0
  rows = []
  for context in args.contexts:
    cmd = [sys.executable, __file__, '--child', str(context), '--latents', str(args.latents),
           '--channels', str(args.channels), '--cross-heads', str(args.cross_heads),
           '--layers', str(args.layers), '--repeats', str(args.repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows.append(json.loads(out.strip().splitlines()[-1]))
  print(f'M={args.latents} C={args.channels} cross heads={args.cross_heads} '
        f'latent layers={args.layers}, batch 1, float32, eval forward (best of '
        f'{args.repeats})')
  print('| context N | forward s | s per 1k tokens | vs first row | peak RSS GiB |')
  print('|---|---|---|---|---|')
  base = rows[0]['seconds'] / rows[0]['context']
  for r in rows:
    per_token = r['seconds'] / r['context']
    print(f"| {r['context']} | {r['seconds']:.3f} | {1000 * per_token:.4f} | "
          f"{per_token / base:.2f}x | {r['peak_rss_gib']:.2f} |")
  return 0


if __name__ == '__main__':
  sys.exit(main())
