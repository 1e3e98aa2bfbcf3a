"""Train-step time and peak memory against input size: Perceiver IO vs a Transformer.

    .venv/bin/python benchmarks/scaling.py [--sizes 1024 4096 8192 16384 65536] [--out DIR]
    .venv/bin/python benchmarks/scaling.py --table_from DIR/scaling.json  # a saved run

The paper's central claim, measured: at a fixed latent array, Perceiver IO's cost grows
linearly with the number of inputs N, a Transformer encoder's quadratically. Both models
have the same width C, depth L and heads, read [B, N, C] token features and are trained
with Adam on a mean-pooled regression loss (so only the encoders differ):

  perceiver_io: one cross-attention N -> M latents, then L latent self-attention layers.
  transformer:  L self-attention layers over all N tokens (blocks.SelfAttention).

Each (model, N) runs in its own process, with its address space capped at --memory_gib
(a run that exceeds it is reported as out of memory; 0: no cap, for GPUs, where the peak
reported is the accelerator's own peak_bytes_in_use instead of the host's RSS): jit compile, 2 warm-up steps, then
the median of --repeats timed steps, and the process's peak RSS. Writes scaling.json and
scaling.png into --out and prints a markdown table.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(model_name: str, size: int, args) -> dict:
  """Runs in the subprocess: times one configuration."""
  import haiku as hk  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from perceiver_agents import blocks  # pylint: disable=g-import-not-at-top

  def forward(x):  # x: [B, N, C]
    if model_name == 'perceiver_io':
      encoder = blocks.PerceiverEncoder(
          num_self_attends_per_block=args.layers, num_blocks=1,
          z_index_dim=args.latents, num_z_channels=args.channels,
          num_self_attend_heads=args.heads, num_cross_attend_heads=1)
      z = encoder(x, encoder.latents(x), is_training=True)  # [B, M, C]
    else:
      z = x
      for _ in range(args.layers):
        z = blocks.SelfAttention(num_heads=args.heads, widening_factor=1)(
            z, is_training=True)  # [B, N, C]
    return hk.Linear(1)(jnp.mean(z, axis=1))[:, 0]  # [B]

  model = hk.without_apply_rng(hk.transform(forward))
  x = jnp.asarray(np.random.RandomState(0).randn(args.batch, size, args.channels),
                  jnp.float32)
  y = jnp.ones([args.batch], jnp.float32)
  params = model.init(jax.random.PRNGKey(0), x)
  optimizer = optax.adam(1e-3)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean((model.apply(p, x) - y) ** 2))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  for _ in range(2):
    params, opt_state, loss = step(params, opt_state, x, y)
  jax.block_until_ready(loss)
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, x, y)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - start)
  device = jax.devices()[0]
  if device.platform == 'gpu':  # The accelerator's own peak, not the host's.
    peak = device.memory_stats()['peak_bytes_in_use'] / 2**30
  else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  return {'model': model_name, 'size': size, 'step_s': float(np.median(times)),
          'peak_rss_gib': peak, 'device': device.device_kind}


def measure(model_name: str, size: int, args) -> dict:
  command = [sys.executable, __file__, '--child', model_name, str(size)] + [
      f'--{k}={getattr(args, k)}' for k in
      ('channels', 'layers', 'heads', 'latents', 'batch', 'repeats', 'memory_gib')]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [REPO, os.environ.get('PYTHONPATH', '')]))
  try:
    done = subprocess.run(command, capture_output=True, text=True, env=env,
                          timeout=args.child_timeout)
  except subprocess.TimeoutExpired:
    return {'model': model_name, 'size': size, 'step_s': None, 'peak_rss_gib': None,
            'error': f'stopped after --child_timeout {args.child_timeout:.0f} s'}
  if done.returncode != 0:
    lines = done.stderr.strip().splitlines() or ['?']
    # The exception's own line (e.g. XlaRuntimeError: RESOURCE_EXHAUSTED ...), not JAX's
    # note on filtered frames.
    tail = next((l for l in reversed(lines) if 'Error' in l or 'RESOURCE' in l),
                lines[-1])[:160]
    return {'model': model_name, 'size': size, 'step_s': None, 'peak_rss_gib': None,
            'error': f'failed (exit {done.returncode}; memory cap '
                     f'{args.memory_gib} GiB): {tail}'}
  return json.loads(done.stdout.strip().splitlines()[-1])


def plot(results, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for name in ('perceiver_io', 'transformer'):
    rows = [r for r in results if r['model'] == name and r['step_s'] is not None]
    for ax, key, label in ((axes[0], 'step_s', 'train step (s)'),
                           (axes[1], 'peak_rss_gib', 'peak RSS (GiB)')):
      ax.loglog([r['size'] for r in rows], [r[key] for r in rows], 'o-', label=name)
      ax.set_xlabel('inputs N')
      ax.set_ylabel(label)
  axes[0].legend()
  fig.suptitle('Perceiver IO (fixed latents) vs Transformer: train step vs input size')
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--child', nargs=2, metavar=('MODEL', 'N'))
  parser.add_argument('--sizes', type=int, nargs='+', default=[1024, 4096, 8192, 16384, 65536])
  parser.add_argument('--channels', type=int, default=64)
  parser.add_argument('--layers', type=int, default=4)
  parser.add_argument('--heads', type=int, default=4)
  parser.add_argument('--latents', type=int, default=256)
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--memory_gib', type=float, default=16.0)
  parser.add_argument('--child_timeout', type=float, default=None,
                      help='seconds per (model, N) process; one stopped is reported')
  parser.add_argument('--out', default=None,
                      help='default: benchmarks/results/scaling_<cpu|gpu>')
  parser.add_argument('--table_from', metavar='SCALING_JSON',
                      help="print the table of a saved run (and redraw its plot)")
  args = parser.parse_args()
  if args.child:
    if args.memory_gib > 0:  # 0: no cap (a GPU process maps far more than it uses).
      cap = int(args.memory_gib * 2**30)
      resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    print(json.dumps(child(args.child[0], int(args.child[1]), args)))
    return
  if args.out is None:
    import jax  # pylint: disable=g-import-not-at-top
    where = 'gpu' if jax.default_backend() == 'gpu' else 'cpu'
    args.out = os.path.join(REPO, 'benchmarks', 'results', f'scaling_{where}')
  if args.table_from:
    with open(args.table_from) as f:
      results = json.load(f)['results']
    plot(results, os.path.join(os.path.dirname(args.table_from), 'scaling.png'))
    print(table(results))
    return
  results = []
  os.makedirs(args.out, exist_ok=True)
  for size in args.sizes:
    for name in ('perceiver_io', 'transformer'):
      results.append(measure(name, size, args))
      print(json.dumps(results[-1]), flush=True)
      # After each run: a benchmark cut short keeps what it measured.
      with open(os.path.join(args.out, 'scaling.json'), 'w') as f:
        json.dump({'args': vars(args), 'results': results}, f, indent=2)
  plot(results, os.path.join(args.out, 'scaling.png'))
  print('\n' + table(results))


def table(results) -> str:
  """Markdown: step time, growth over the smallest N and peak memory per model."""
  sizes = sorted({r['size'] for r in results})
  base = {r['model']: r['step_s'] for r in results if r['size'] == sizes[0]}
  lines = ['| N | Perceiver IO step | x first | peak GiB | Transformer step | x first | '
           'peak GiB |', '|---|---|---|---|---|---|---|']
  for size in sizes:
    cells = [f'{size:,}']
    for name in ('perceiver_io', 'transformer'):
      r = next((r for r in results if r['model'] == name and r['size'] == size), None)
      if r is None:
        cells += ['not run', '', '']
      elif r['step_s'] is None:
        cells += ['stopped (time limit)' if 'child_timeout' in r.get('error', '')
                  else 'out of memory / failed', '', '']
      else:
        step = r['step_s']
        cells += [f'{step:.2f} s' if step >= 1 else f'{step * 1e3:.3g} ms',
                  f'{step / base[name]:.1f}x',
                  f'{r["peak_rss_gib"]:.2f}']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)

if __name__ == '__main__':
  main()
