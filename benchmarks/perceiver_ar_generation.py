"""Cached generation vs recomputing the full forward for every new token.

A randomly initialised Perceiver AR (speed does not depend on training) continues a
prompt greedily, once with the key/value caches (blocks/ar_generation.py) and once by
running the whole forward (all context positions, the whole latent window) per token.
Both are jit-compiled and warmed up first; the greedy tokens must be identical.

    python benchmarks/perceiver_ar_generation.py --context 4096 --new-tokens 256
"""

import argparse
import sys
import time

import haiku as hk
import jax
import numpy as np

from perceiver_agents.blocks.ar_generation import Generator
from perceiver_agents.blocks.perceiver_ar import PerceiverAR


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--context', type=int, default=4096)
  parser.add_argument('--new-tokens', type=int, default=256)
  parser.add_argument('--latents', type=int, default=512)
  parser.add_argument('--channels', type=int, default=128)
  parser.add_argument('--layers', type=int, default=4)
  args = parser.parse_args()
  kwargs = dict(vocab_size=256, max_context=args.context, num_latents=args.latents,
                num_channels=args.channels, num_heads=4, num_cross_heads=4,
                num_layers=args.layers, widening_factor=4)
  prompt_len = args.context - args.new_tokens
  prompt = np.random.RandomState(0).randint(0, 256, (1, prompt_len)).astype(np.int32)
  model = hk.transform(lambda t: PerceiverAR(**kwargs)(t, is_training=False))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), prompt[:, :args.latents])
  # Enough cache slots that the window never restarts: both paths see the same window.
  generator = Generator(kwargs, params, max_latents=args.latents + args.new_tokens)
  for cached in (True, False):  # Warm-up: compile every function used below.
    generator.generate(prompt, num_tokens=2, cached=cached)
  timings, outputs = {}, {}
  for cached in (True, False):
    t0 = time.perf_counter()
    outputs[cached] = generator.generate(prompt, num_tokens=args.new_tokens,
                                         cached=cached).tokens
    timings[cached] = time.perf_counter() - t0
  same = bool(np.array_equal(outputs[True], outputs[False]))
  print(f'context {args.context} (prompt {prompt_len} + {args.new_tokens} new), '
        f'M={args.latents}, C={args.channels}, {args.layers} latent layers, batch 1')
  print(f'cached:   {timings[True]:.2f} s ({1000 * timings[True] / args.new_tokens:.1f} '
        'ms/token)')
  print(f'uncached: {timings[False]:.2f} s ({1000 * timings[False] / args.new_tokens:.1f} '
        'ms/token)')
  print(f'speed-up: {timings[False] / timings[True]:.1f}x; identical greedy output: {same}')
  return 0 if same else 1


if __name__ == '__main__':
  sys.exit(main())
