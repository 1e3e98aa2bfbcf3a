"""Entity encoder cost at 512 entities: Perceiver IO (32 latents) vs Transformer.

    .venv/bin/python benchmarks/agents_encoder_cost.py [--entities 512] [--batch 8]

Both encoders at AlphaStar-like sizes (width 256, 3 self-attention layers, 2 heads,
MLP widening 4, 46 features per entity as in pysc2's raw units); Perceiver IO
cross-attends the entities into 32 latents and runs its 3 layers there, then decodes one
output per entity for pointer heads. FLOPs are XLA's cost analysis of the compiled
forward pass; times are the median of --repeats jitted calls, measured alternately in one
process (so machine load affects both alike). Prints one JSON line per encoder and a ratio.
"""

import argparse
import json
import time

import haiku as hk
import jax
import numpy as np

from perceiver_agents.agents import encoders


def build(name, args):
  common = dict(output_size=256, entity_size=256, num_channels=256, num_heads=2,
                widening_factor=4)
  def forward(x, m):
    if name == 'perceiver_io':
      enc = encoders.PerceiverIOEntityEncoder(num_latents=args.latents, num_self_attends=3,
                                              **common)
    else:
      enc = encoders.TransformerEntityEncoder(num_layers=3, **common)
    return enc(x, m, is_training=False)
  return hk.transform(forward)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--entities', type=int, default=512)
  parser.add_argument('--latents', type=int, default=32)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--repeats', type=int, default=20)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  x = rng.normal(size=[args.batch, args.entities, 46]).astype(np.float32)
  mask = np.ones([args.batch, args.entities], bool)
  mask[:, args.entities * 3 // 4:] = False  # a quarter padding, as in real games
  runs = {}
  for name in ('perceiver_io', 'transformer'):
    model = build(name, args)
    params = model.init(jax.random.PRNGKey(0), x, mask)
    compiled = jax.jit(model.apply).lower(params, None, x, mask).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    jax.block_until_ready(compiled(params, None, x, mask))
    runs[name] = dict(compiled=compiled, params=params, flops=float(cost['flops']),
                      times=[],
                      num_params=sum(p.size for p in jax.tree.leaves(params)))
  for _ in range(args.repeats):
    for run in runs.values():
      start = time.perf_counter()
      jax.block_until_ready(run['compiled'](run['params'], None, x, mask))
      run['times'].append(time.perf_counter() - start)
  for name, run in runs.items():
    print(json.dumps({'encoder': name, 'entities': args.entities, 'batch': args.batch,
                      'gflops': round(run['flops'] / 1e9, 3),
                      'median_ms': round(1e3 * float(np.median(run['times'])), 2),
                      'params': int(run['num_params'])}))
  p, t = runs['perceiver_io'], runs['transformer']
  print(json.dumps({'flops_ratio_transformer_over_perceiver': round(t['flops'] / p['flops'], 2),
                    'time_ratio_transformer_over_perceiver':
                        round(float(np.median(t['times']) / np.median(p['times'])), 2)}))


if __name__ == '__main__':
  main()
