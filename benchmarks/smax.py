"""SMAX: this project's Anakin agents against JaxMARL's own IPPO baseline, side by side.

    # learning curves (win rate vs environment steps), one run each:
    flock /tmp/perceiver_bench.lock python benchmarks/smax.py train --map 3m \
        --encoder perceiver_io --env-steps 2e6 --out benchmarks/results/smax_3m_perceiver_io.json
    flock /tmp/perceiver_bench.lock python benchmarks/smax_baseline.py \
        --jaxmarl-src /tmp/jaxmarl_src --map 3m --steps 2e6 \
        --out benchmarks/results/smax_baseline_3m.json
    # env steps/s of the baseline and ours in one process, back to back, and FLOPs:
    flock /tmp/perceiver_bench.lock python benchmarks/smax.py throughput --map 3m \
        --jaxmarl-src /tmp/jaxmarl_src --updates 3 --out benchmarks/results/smax_throughput_3m.json
    python benchmarks/smax.py plot benchmarks/results/smax_*.json \
        --out benchmarks/results/smax_curves.png
    python benchmarks/smax.py table benchmarks/results/smax_*.json    # BENCHMARKS.md rows
    # encoder ablation: one `train --seed S` JSON per encoder and seed, grouped by encoder:
    python benchmarks/smax.py ablation benchmarks/results/smax_3m_{perceiver_io,mlp}.json \
        benchmarks/results/smax_ablation_3m_*.json
    # three seeds side by side in one compiled program (rl.num_seeds), one JSON:
    flock /tmp/perceiver_bench.lock python benchmarks/smax.py train --map 3m --encoder mlp \
        --seeds 0,1,2 --env-steps 2e6 --out benchmarks/results/smax_3m_mlp_seeds.json
    # env steps/s of S seeds in one program against one seed, per encoder:
    flock /tmp/perceiver_bench.lock python benchmarks/smax.py seeds --map 3m --num-seeds 3 \
        --updates 3 --out benchmarks/results/smax_seeds_3m.json
    # env steps/s on 1, 2, 4, 8 simulated CPU devices (one subprocess each):
    flock /tmp/perceiver_bench.lock python benchmarks/smax.py devices --map 3m \
        --updates 2 --out benchmarks/results/smax_devices_3m.json

`train` runs the `smax` task (perceiver_agents/tasks/smax.py) through the Anakin loop with
`--config.*` overrides passed on, then evaluates `--eval-episodes` fresh episodes (and on
each `--eval-map`, zero-shot); the JSON holds the per-log curve from metrics.jsonl.
`collect` (same arguments) writes that JSON from the workdir of a run cut short (its
latest checkpoint; checkpoints every 10 updates). `--seeds 0,1,2` (consecutive) trains
those seeds side by side in one program (rl.num_seeds); the JSON then holds the mean
curve as 'curve', each seed's under 'curves' and each seed's evaluation under
eval[map]['seeds'], and `plot` / `table` show the mean and the range over the seeds.
`seeds` times S seeds in one program against one seed (env steps/s of all seeds
together), per encoder. `devices` runs one subprocess per device count D with
XLA_FLAGS=--xla_force_host_platform_device_count=D, the environments split over the
`data` mesh axis: the total number of environments is fixed (--num-envs, 128 by default:
the same work, split D ways) unless --envs-per-device is given (then D x that).
`throughput` compiles first and then times whole updates (128 envs x 128 steps for both,
the baseline's default); FLOPs per agent step are XLA's cost analysis of one forward pass
of the acting network on one environment's observation, divided by its allies.
"""

import argparse
import json
import os
import shutil
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from perceiver_agents import learner  # pylint: disable=g-import-not-at-top
from perceiver_agents.agents import anakin
from perceiver_agents.learner import metrics as metrics_lib
from perceiver_agents.tasks import smax as smax_task


def _seeds(args):
  """The seeds of --seeds 'a,a+1,...' (consecutive: rl.num_seeds runs seed..seed+S-1)."""
  if not getattr(args, 'seeds', ''):
    return [args.seed]
  seeds = [int(x) for x in args.seeds.split(',')]
  if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
    raise SystemExit(f'--seeds must be consecutive ascending integers, got {args.seeds}.')
  return seeds


def _config(args, extra):
  config = smax_task.get_config()
  seeds = _seeds(args)
  learner.apply_overrides(config, [
      f'env.map={args.map}', f'agent.encoder={args.encoder}', f'seed={seeds[0]}',
      f'rl.num_seeds={len(seeds)}',
      f'rl.env_steps={int(float(args.env_steps))}', 'train.progress_bar=false',
      'train.log_every=1', 'checkpoint.every=10'] + list(extra))
  return config


def agent_flops(env, config) -> float:
  """XLA's FLOPs of one acting forward pass on one environment, per ally."""
  network = anakin.make_network(config.agent, env)
  obs = jax.tree.map(lambda x: x[None], jax.jit(env.reset)(jax.random.PRNGKey(0))[0])
  params = network.init(jax.random.PRNGKey(0), obs)
  cost = jax.jit(network.apply).lower(params, obs).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops']) / env.num_agents


def train(args, extra):
  config = _config(args, extra)
  workdir = _workdir(args)
  shutil.rmtree(workdir, ignore_errors=True)
  task = smax_task.build(config)
  start = time.perf_counter()
  anakin.train(task.env, config, workdir)
  collect(args, extra, wall=time.perf_counter() - start)


def _workdir(args):
  seeds = '-'.join(map(str, _seeds(args)))
  return args.workdir or f'/tmp/smax_bench_{args.map}_{args.encoder}_{seeds}'


CURVE_KEYS = ('env_steps', 'win_rate', 'episode_return', 'env_steps_per_s')


def collect(args, extra, wall=None):
  """The result JSON from a (possibly cut short) run's workdir: curve, eval, FLOPs."""
  config = _config(args, extra)
  workdir = _workdir(args)
  records = [r for r in metrics_lib.read_metrics(workdir) if r['split'] == 'train']
  curve = [{k: r[k] for k in CURVE_KEYS if k in r} for r in records]
  seeds = _seeds(args)
  curves = {}
  if len(seeds) > 1:  # Seed i's points from the '<name>/seed<i>' metrics.
    for i, seed in enumerate(seeds):
      curves[str(seed)] = [
          {'env_steps': r['env_steps'],
           **{k: r[f'{k}/seed{i}'] for k in CURVE_KEYS if f'{k}/seed{i}' in r}}
          for r in records]
  evals = {}
  # A mixture is evaluated map by map (--eval-map), each padded like the mixture.
  for name in ([''] if '+' not in args.map else []) + list(args.eval_map):
    config.eval.map = name
    config.eval.episodes = args.eval_episodes
    evals[name or args.map] = smax_task.AnakinTask(config).evaluate(workdir)
  step = next(iter(evals.values()))['step'] if evals else None
  first_map = args.map.split('+')[0]
  out = {'map': args.map, 'encoder': args.encoder, 'view': config.agent.view,
         'seed': seeds[0], 'overrides': list(extra), 'updates_checkpointed': step,
         'env_steps': curve[-1]['env_steps'] if curve else 0,
         'env_steps_budget': int(float(args.env_steps)),
         'train_seconds': sum(config.rl.num_envs * config.rl.unroll_length * len(seeds) /
                              c['env_steps_per_s'] for c in curve[1:]),
         'wall_seconds_with_compile': wall, 'curve': curve, 'eval': evals,
         'flops_per_agent_step': agent_flops(smax_task.make_env(config, first_map), config),
         'last_train_metrics': records[-1] if records else None}
  if curves:
    out.update(seeds=seeds, curves=curves)
  _write(args.out, out)
  print(json.dumps({k: out[k] for k in ('map', 'encoder', 'env_steps', 'train_seconds',
                                        'eval', 'flops_per_agent_step')}))


def throughput(args, extra):
  import smax_baseline  # pylint: disable=g-import-not-at-top
  records = []
  smax_baseline._stand_ins(records)  # pylint: disable=protected-access
  import importlib.util  # pylint: disable=g-import-not-at-top
  ippo_dir = os.path.join(args.jaxmarl_src, 'baselines', 'IPPO')
  spec = importlib.util.spec_from_file_location(
      'ippo_rnn_smax', os.path.join(ippo_dir, 'ippo_rnn_smax.py'))
  ippo = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ippo)
  base_config = smax_baseline._load_config(  # pylint: disable=protected-access
      os.path.join(ippo_dir, 'config', 'ippo_rnn_smax.yaml'))
  per_update = base_config['NUM_ENVS'] * base_config['NUM_STEPS']
  base_config.update(MAP_NAME=args.map, TOTAL_TIMESTEPS=float(args.updates * per_update))
  rows = {}
  # Baseline: its whole training (args.updates updates) as one compiled program.
  key = jax.random.PRNGKey(0)
  compiled = jax.jit(ippo.make_train(dict(base_config))).lower(key).compile()
  start = time.perf_counter()
  jax.block_until_ready(compiled(key))
  seconds = time.perf_counter() - start
  env = smax_task.make_env(_config(args, extra))
  net = ippo.ActorCriticRNN(env.env.action_space(env.env.agents[0]).n, config=base_config)
  obs_size = env.env.observation_space(env.env.agents[0]).shape[0]
  x = (np.zeros((1, 1, obs_size), np.float32), np.zeros((1, 1), bool),
       np.ones((1, 1, net.action_dim), np.float32))
  h = ippo.ScannedRNN.initialize_carry(1, base_config['GRU_HIDDEN_DIM'])
  params = net.init(jax.random.PRNGKey(0), h, x)
  cost = jax.jit(lambda p: net.apply(p, h, x)[2]).lower(params).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  rows['ippo_baseline'] = {'env_steps_per_s': args.updates * per_update / seconds,
                           'flops_per_agent_step': float(cost['flops'])}
  print(json.dumps({'ippo_baseline': rows['ippo_baseline']}), flush=True)
  for encoder in args.encoders:
    args.encoder = encoder
    config = _config(args, extra)
    programs = anakin.build(env, config)
    ts = programs.init(jax.random.PRNGKey(0))
    ts, scalars = programs.update(ts)
    jax.block_until_ready(scalars)
    start = time.perf_counter()
    for _ in range(args.updates):
      ts, scalars = programs.update(ts)
    jax.block_until_ready(scalars)
    seconds = time.perf_counter() - start
    rows[encoder] = {'env_steps_per_s': args.updates * programs.env_steps_per_update / seconds,
                     'flops_per_agent_step': agent_flops(env, config)}
    rows[encoder]['ratio_to_baseline'] = (rows[encoder]['env_steps_per_s'] /
                                          rows['ippo_baseline']['env_steps_per_s'])
    print(json.dumps({encoder: rows[encoder]}), flush=True)
  _write(args.out, {'map': args.map, 'updates': args.updates, 'overrides': list(extra),
                    'devices': jax.device_count(), 'rows': rows})


def _time_updates(programs, config, updates):
  """Env steps/s (all seeds) of `updates` whole updates after one to compile."""
  ts = programs.init(anakin.init_keys(config))
  ts, scalars = programs.update(ts)
  jax.block_until_ready(scalars)
  start = time.perf_counter()
  for _ in range(updates):
    ts, scalars = programs.update(ts)
  jax.block_until_ready(scalars)
  seconds = time.perf_counter() - start
  return updates * programs.env_steps_per_update * programs.num_seeds / seconds


def seeds_throughput(args, extra):
  """Env steps/s of --num-seeds seeds in one program against one seed, per encoder."""
  rows = {}
  for encoder in args.encoders:
    args.encoder = encoder
    row = {}
    for num_seeds in (1, args.num_seeds):
      config = _config(args, list(extra) + [f'rl.num_seeds={num_seeds}'])
      env = smax_task.make_env(config)
      row[f'env_steps_per_s_{num_seeds}_seeds'] = _time_updates(
          anakin.build(env, config), config, args.updates)
      print(json.dumps({encoder: row}), flush=True)
    row['ratio'] = (row[f'env_steps_per_s_{args.num_seeds}_seeds'] /
                    row['env_steps_per_s_1_seeds'])
    rows[encoder] = row
  _write(args.out, {'map': args.map, 'updates': args.updates, 'num_seeds': args.num_seeds,
                    'overrides': list(extra), 'rows': rows})
  print(f'| encoder | env steps/s, 1 seed | env steps/s, {args.num_seeds} seeds in one '
        'program (all seeds) | ratio |')
  print('|---|---|---|---|')
  for encoder, row in rows.items():
    print(f"| {encoder} | {row['env_steps_per_s_1_seeds']:,.0f} | "
          f"{row[f'env_steps_per_s_{args.num_seeds}_seeds']:,.0f} | {row['ratio']:.2f} |")


def devices_child(args, extra):
  """One device count (this process's): env steps/s of the Anakin update on all devices."""
  num_devices = jax.device_count()
  num_envs = args.envs_per_device * num_devices if args.envs_per_device else args.num_envs
  config = _config(args, list(extra) + [f'rl.num_envs={num_envs}'])
  env = smax_task.make_env(config)
  programs = anakin.build(env, config, learner.make_mesh())
  print('RESULT ' + json.dumps({
      'devices': num_devices, 'num_envs': num_envs,
      'env_steps_per_s': _time_updates(programs, config, args.updates)}), flush=True)


def devices(args, extra):
  """Env steps/s of the Anakin update on 1, 2, 4, 8 simulated CPU devices."""
  import subprocess  # pylint: disable=g-import-not-at-top
  rows = []
  for d in args.device_counts:
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS=f'--xla_force_host_platform_device_count={d}')
    command = [sys.executable, os.path.abspath(__file__), 'devices-child', '--map', args.map,
               '--encoder', args.encoder, '--updates', str(args.updates),
               '--num-envs', str(args.num_envs),
               '--envs-per-device', str(args.envs_per_device)] + [
                   f'--config.{e}' for e in extra]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
    if proc.returncode or not lines:
      raise SystemExit(f'devices={d} failed:\n{proc.stderr[-3000:]}')
    rows.append(json.loads(lines[-1][len('RESULT '):]))
    rows[-1]['speedup'] = rows[-1]['env_steps_per_s'] / rows[0]['env_steps_per_s']
    print(json.dumps(rows[-1]), flush=True)
  scaling = (f'{args.envs_per_device} per device' if args.envs_per_device
             else f'{args.num_envs} in total')
  _write(args.out, {'map': args.map, 'encoder': args.encoder, 'updates': args.updates,
                    'envs': scaling, 'overrides': list(extra), 'cpu_count': os.cpu_count(),
                    'rows': rows})
  print(f'| simulated devices | environments ({scaling}) | env steps/s | vs 1 device |')
  print('|---|---|---|---|')
  for r in rows:
    print(f"| {r['devices']} | {r['num_envs']} | {r['env_steps_per_s']:,.0f} | "
          f"{r['speedup']:.2f}x |")


def plot(args, extra):
  del extra
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  runs = [json.load(open(p)) for p in args.files]
  maps = sorted({r['map'] for r in runs if 'curve' in r})
  fig, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 3.6), squeeze=False)
  for ax, name in zip(axes[0], maps):
    for r in runs:
      if r.get('map') != name or 'curve' not in r:
        continue
      c = r['curve']
      if 'encoder' in r:
        label = f"ours: {r['encoder']} ({r['view']})"
        xs = [p['env_steps'] for p in c]
      else:
        label, xs = 'JaxMARL IPPO (GRU)', [p['env_step'] for p in c]
      xs = np.asarray(xs) / 1e6
      if 'curves' in r:  # Several seeds: their mean, and their range shaded.
        label += f", {len(r['curves'])} seeds"
        per_seed = np.stack([_smooth(_win_rates(s)) for s in r['curves'].values()])
        ax.fill_between(xs, np.nanmin(per_seed, 0), np.nanmax(per_seed, 0), alpha=0.2)
      ax.plot(xs, _smooth(_win_rates(c)), label=label)
    ax.set_title(f'SMAX {name}')
    ax.set_xlabel('environment steps (M)')
    ax.set_ylabel('win rate (training episodes)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(args.out, dpi=110)
  print(args.out)


def _win_rates(curve):
  return np.asarray([p.get('win_rate', np.nan) for p in curve], float)


def _smooth(ys):
  """A running mean over ~3% of the run (NaNs, updates with no finished episode, skipped)."""
  k = max(1, len(ys) // 30)
  valid = np.isfinite(ys).astype(float)
  return (np.convolve(np.nan_to_num(ys), np.ones(k), mode='same') /
          np.maximum(np.convolve(valid, np.ones(k), mode='same'), 1))


def _mean_range(values):
  """'mean' or, for several seeds, 'mean [min, max]'."""
  if len(values) == 1:
    return f'{values[0]:.2f}'
  return f'{np.mean(values):.2f} [{np.min(values):.2f}, {np.max(values):.2f}]'


def _win_at(curve, steps, key, window=5):
  """Mean training win rate over the last `window` logged updates up to `steps`."""
  points = [c for c in curve if c[key] <= steps + 1 and 'win_rate' in c
            and np.isfinite(c['win_rate'])]
  return float(np.mean([c['win_rate'] for c in points[-window:]])) if points else float('nan')


def table(args, extra):
  """Markdown rows: win rate at the same env steps for the baseline and each of our runs."""
  del extra
  runs = [json.load(open(p)) for p in args.files]
  print('| map | agent | env steps (budget) | train win rate at those steps, ours | '
        'baseline at the same steps | eval win rate (episodes) | FLOPs / agent step |')
  print('|---|---|---|---|---|---|---|')
  for r in runs:
    if 'encoder' not in r:
      continue
    base = [b for b in runs if 'encoder' not in b and b.get('map') == r['map'] and 'curve' in b]
    steps = r['env_steps']
    curves = list(r['curves'].values()) if 'curves' in r else [r['curve']]
    ours = _mean_range([_win_at(c, steps, 'env_steps') for c in curves])
    theirs = _win_at(base[0]['curve'], steps, 'env_step') if base else float('nan')
    ev = r['eval'].get(r['map'], {'win_rate': float('nan'), 'episodes': 0})
    evals = [s['win_rate'] for s in ev['seeds']] if 'seeds' in ev else [ev['win_rate']]
    agent = f"{r['encoder']} ({r['view']})" + (f", {len(curves)} seeds" if 'curves' in r
                                               else '')
    print(f"| {r['map']} | {agent} | {steps:,.0f} "
          f"({r['env_steps_budget']:,.0f}) | {ours} | {theirs:.2f} | "
          f"{_mean_range(evals)} ({ev['episodes']:.0f}) | {r['flops_per_agent_step']:,.0f} |")


def ablation(args, extra):
  """Markdown rows: per encoder, the seeds' win rates at the budget (one JSON per seed)."""
  del extra
  groups = {}
  for path in args.files:
    r = json.load(open(path))
    if 'encoder' in r and 'curves' not in r:
      groups.setdefault((r['map'], r['encoder'], r['view']), []).append(r)
  print('| map | encoder | seeds | train win rate at the budget, mean [min, max] | '
        'per seed | eval win rate, mean [min, max] | FLOPs / agent step |')
  print('|---|---|---|---|---|---|---|')
  for (name, encoder, view), runs in sorted(groups.items()):
    runs.sort(key=lambda r: r['seed'])
    wins = [_win_at(r['curve'], r['env_steps'], 'env_steps') for r in runs]
    evals = [r['eval'][name]['win_rate'] for r in runs if name in r['eval']]
    print(f"| {name} | {encoder} ({view}) | {', '.join(str(r['seed']) for r in runs)} | "
          f"{_mean_range(wins)} | {' / '.join(f'{w:.2f}' for w in wins)} | "
          f"{_mean_range(evals) if evals else '-'} | {runs[0]['flops_per_agent_step']:,.0f} |")


def _write(path, obj):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(obj, f, indent=1)


def main():
  parser = argparse.ArgumentParser()
  sub = parser.add_subparsers(dest='command', required=True)
  t = sub.add_parser('train', aliases=['collect'])
  t.add_argument('--map', default='3m')
  t.add_argument('--encoder', default='perceiver_io')
  t.add_argument('--env-steps', default='2e6')
  t.add_argument('--seed', type=int, default=0)
  t.add_argument('--seeds', default='',
                 help="consecutive seeds side by side in one program, e.g. '0,1,2'")
  t.add_argument('--eval-episodes', type=int, default=256)
  t.add_argument('--eval-map', action='append', default=[])
  t.add_argument('--workdir', default='')
  t.add_argument('--out', required=True)
  s = sub.add_parser('throughput')
  s.add_argument('--map', default='3m')
  s.add_argument('--jaxmarl-src', required=True)
  s.add_argument('--updates', type=int, default=3)
  s.add_argument('--encoders', nargs='+', default=['perceiver_io', 'mlp'])
  s.add_argument('--seed', type=int, default=0)
  s.add_argument('--env-steps', default='2e6')
  s.add_argument('--encoder', default='perceiver_io')
  s.add_argument('--out', required=True)
  for name in ('seeds', 'devices', 'devices-child'):
    m = sub.add_parser(name)
    m.add_argument('--map', default='3m')
    m.add_argument('--updates', type=int, default=3)
    m.add_argument('--seed', type=int, default=0)
    m.add_argument('--env-steps', default='2e6')
    m.add_argument('--encoder', default='perceiver_io')
    if name == 'seeds':
      m.add_argument('--num-seeds', type=int, default=3)
      m.add_argument('--encoders', nargs='+', default=['mlp', 'perceiver_io'])
    else:
      m.add_argument('--num-envs', type=int, default=128)
      m.add_argument('--envs-per-device', type=int, default=0,
                     help='> 0: D x this many environments on D devices')
      m.add_argument('--device-counts', type=int, nargs='+', default=[1, 2, 4, 8])
    if name != 'devices-child':
      m.add_argument('--out', required=True)
  for name in ('table', 'ablation'):
    sub.add_parser(name).add_argument('files', nargs='+')
  p = sub.add_parser('plot')
  p.add_argument('files', nargs='+')
  p.add_argument('--out', required=True)
  args, extra = parser.parse_known_args()
  extra = [e[len('--config.'):] for e in extra if e.startswith('--config.')]
  {'train': train, 'collect': collect, 'throughput': throughput, 'table': table,
   'ablation': ablation, 'plot': plot, 'seeds': seeds_throughput, 'devices': devices,
   'devices-child': devices_child}[args.command](args, extra)


if __name__ == '__main__':
  main()
