"""IMPALA actor backends side by side: env steps/s and learner updates/s, learning, faults.

    flock /tmp/perceiver_bench.lock .venv/bin/python benchmarks/agents_throughput.py \
        throughput [--envs catch,entity_micro] [--steps 12] [--actors 1,2,4]
    flock /tmp/perceiver_bench.lock .venv/bin/python benchmarks/agents_throughput.py \
        learning [--runs catch,entity_micro] [--backend ray --num_actors 4] [--seeds 0,1,2]
    flock /tmp/perceiver_bench.lock .venv/bin/python benchmarks/agents_throughput.py fault

throughput: for each environment, trains `--steps` updates with inline (1 actor), then
  threads and ray with each of --actors actors (train.batch_size = 16 trajectories per
  update, split evenly over the actors), all in this process one after another (one
  local Ray for all ray runs). Rates are the means over the last two thirds of each run
  (the first third holds compilation and start-up; the actors' queue, at most one
  update's worth, is full or empty alike at both ends of a steady window): learner
  updates/s over training time and environment steps/s as the actors report them.
  catch = bsuite catch/0 as entities with the Perceiver IO encoder
  (benchmarks/agents_catch.py's config, unroll 20), no step delay; entity_micro =
  benchmarks/agents_entity.py's Perceiver IO config (unroll 8) with
  env_step_delay_ms=20, standing in for a game engine such as StarCraft II.
learning: catch for 300 updates (BENCHMARKS.md's agents_catch row) and entity_micro with
  the Perceiver IO encoder for 3000 updates (the agents_entity row), on --backend with
  --num_actors actors, for each of --seeds: the mean return of the last 100 episodes,
  policy lag and rho, the curve of that mean (every 10 updates) and the first update
  where it reaches 5 (on entity_micro: the escape from the random-enemy plateau).
fault: catch on ray with 2 actors for --steps updates; a thread SIGKILLs actor 0's
  process after update 3; the run must finish and log a restart. Then the same run as
  a `perceiver-agents train agent` process, SIGKILLed once its step-4 checkpoint is
  saved and started again: it must resume (with new actors) and finish.

Writes benchmarks/results/agents_throughput_<mode>[_<runs>].json; throughput also prints
a markdown table.
"""

import argparse
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from perceiver_agents import learner
from perceiver_agents.agents.impala import builder
from perceiver_agents.learner import read_metrics
from perceiver_agents.tasks import agent

CATCH = [
    'env=catch_entities', 'agent.encoder=perceiver_io', 'train.batch_size=16',
    'impala.unroll_length=20', 'agent.num_channels=32', 'agent.spatial_num_latents=8',
    'agent.num_layers=2', 'agent.embedding_size=64', 'agent.torso_size=64',
    'agent.core_size=64', 'optimizer.learning_rate=1e-3']
ENTITY_MICRO = [
    'env=entity_micro', 'agent.encoder=perceiver_io', 'agent.num_channels=32',
    'agent.num_latents=8', 'agent.num_layers=2', 'agent.num_heads=2',
    'agent.embedding_size=32', 'agent.entity_size=32', 'agent.torso_size=64',
    'agent.core_size=64', 'train.batch_size=16', 'impala.unroll_length=8',
    'optimizer.learning_rate=1e-3']
ENVS = {'catch': (CATCH, 0.0), 'entity_micro': (ENTITY_MICRO, 20.0)}
LEARNING_STEPS = {'catch': 300, 'entity_micro': 3000}
RUNS_DIR = '/tmp/agents_throughput'


def make_config(base, *overrides):
  config = agent.get_config()
  return learner.apply_overrides(config, list(base) + [
      'checkpoint.every=0', 'train.progress_bar=false', 'eval.every=0', *overrides])


def train(config, name: str):
  """Trains; returns (result, train records of metrics.jsonl, wall seconds, builder)."""
  workdir = os.path.join(RUNS_DIR, name)
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.perf_counter()
  impala = builder.ImpalaBuilder(config)
  result = learner.train(impala.task(), config, workdir)
  records = [r for r in read_metrics(workdir) if r['split'] == 'train']
  shutil.rmtree(workdir, ignore_errors=True)
  return result, records, time.perf_counter() - start, impala


def throughput(args) -> list:
  rows = []
  configs = [('inline', 1)] + [(b, n) for b in ('threads', 'ray')
                               for n in map(int, args.actors.split(','))]
  for env in args.envs.split(','):
    base, delay = ENVS[env]
    for backend, num_actors in configs:
      config = make_config(base, f'train.steps={args.steps}',
                           f'train.log_every={args.steps // 3}',
                           f'env_step_delay_ms={delay}', f'actors.backend={backend}',
                           f'actors.num_actors={num_actors}', *args.set)
      _, records, wall, _ = train(config, f'{env}_{backend}_{num_actors}')
      steady = records[1:]  # The first third holds compilation and start-up.
      mean = lambda key: sum(r[key] for r in steady) / len(steady)
      rows.append({'env': env, 'delay_ms': delay, 'backend': backend,
                   'num_actors': num_actors,
                   'envs_per_actor': config.train.batch_size // num_actors,
                   'env_steps_per_s': mean('env_steps_per_s'),
                   'updates_per_s': mean('examples_per_s') / config.train.batch_size,
                   'policy_lag_mean': mean('policy_lag_mean'),
                   'overrides': list(args.set), 'wall_seconds': wall})
      print(json.dumps(rows[-1]), flush=True)
  for env in args.envs.split(','):
    base = next(r for r in rows if r['env'] == env and r['backend'] == 'inline')
    for r in rows:
      if r['env'] == env:
        r['env_steps_vs_inline'] = r['env_steps_per_s'] / base['env_steps_per_s']
        r['updates_vs_inline'] = r['updates_per_s'] / base['updates_per_s']
  print('\n| env | step delay | backend | actors x envs | env steps/s | updates/s | '
        'vs inline (env steps) | policy lag |')
  print('|---|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['env']} | {r['delay_ms']:.0f} ms | {r['backend']} | "
          f"{r['num_actors']} x {r['envs_per_actor']} | {r['env_steps_per_s']:.0f} | "
          f"{r['updates_per_s']:.2f} | {r['env_steps_vs_inline']:.2f}x | "
          f"{r['policy_lag_mean']:.2f} |")
  return rows


def learning(args) -> list:
  rows = []
  for env, seed in itertools.product(args.runs.split(','),
                                     map(int, args.seeds.split(','))):
    base, _ = ENVS[env]
    steps = args.steps or LEARNING_STEPS[env]
    config = make_config(base, f'train.steps={steps}', 'train.log_every=10',
                         f'actors.backend={args.backend}',
                         f'actors.num_actors={args.num_actors}', f'seed={seed}',
                         *args.set)
    result, records, wall, _ = train(config, f'learning_{env}_{args.backend}_{seed}')
    m = result.train_metrics
    lags = [r['policy_lag_mean'] for r in records]
    rows.append({'env': env, 'seed': seed, 'backend': args.backend,
                 'num_actors': args.num_actors,
                 'updates': result.step, 'mean_return_last_100': m['episode_return'],
                 'episodes': m['episodes'], 'env_steps': m['env_steps'],
                 'policy_lag_mean': sum(lags) / len(lags),
                 'policy_lag_max': max(r['policy_lag_max'] for r in records),
                 'rho_mean': sum(r['rho_mean'] for r in records) / len(records),
                 'rho_min': min(r['rho_min'] for r in records),
                 'rho_max': max(r['rho_max'] for r in records),
                 'rho_clipped_fraction': sum(r['rho_clipped_fraction']
                                             for r in records) / len(records),
                 'dropped_trajectories': m['dropped_trajectories'],
                 'first_update_at_5': next((r['step'] for r in records
                                            if r['episode_return'] >= 5.0), None),
                 'curve': [[r['step'], r['episode_return']] for r in records],
                 'overrides': list(args.set), 'wall_seconds': wall})
    print(json.dumps({k: v for k, v in rows[-1].items() if k != 'curve'}), flush=True)
  return rows


class _Count(logging.Handler):
  def __init__(self):
    super().__init__(logging.WARNING)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def fault(args) -> list:
  config = make_config(CATCH, f'train.steps={args.steps}', 'train.log_every=1',
                       'actors.backend=ray', 'actors.num_actors=2')
  impala = builder.ImpalaBuilder(config)
  workdir = os.path.join(RUNS_DIR, 'fault')
  shutil.rmtree(workdir, ignore_errors=True)
  handler = _Count()
  logging.getLogger('perceiver_agents.agents.impala').addHandler(handler)
  killed = {}

  def killer():
    path = os.path.join(workdir, 'metrics.jsonl')
    while not (os.path.exists(path) and len(read_metrics(workdir)) >= 3):
      time.sleep(0.2)
    pid = impala.iterator._pool.actor_pids()[0]  # pylint: disable=protected-access
    os.kill(pid, signal.SIGKILL)
    killed.update(pid=pid, after_update=len(read_metrics(workdir)))
    print(f'SIGKILLed Ray actor 0 (pid {pid}) after update {killed["after_update"]}',
          flush=True)

  threading.Thread(target=killer, daemon=True).start()
  start = time.perf_counter()
  result = learner.train(impala.task(), config, workdir)
  row = {'updates': result.step, 'finished': result.step == args.steps,
         'killed_pid': killed.get('pid'), 'killed_after_update': killed.get('after_update'),
         'actor_restarts': result.train_metrics['actor_restarts'],
         'restart_log': [m for m in handler.messages if 'restarting' in m],
         'wall_seconds': time.perf_counter() - start}
  print(json.dumps(row), flush=True)
  return [row, learner_kill(args)]


def learner_kill(args) -> dict:
  """SIGKILLs a `perceiver-agents train agent` process (ray backend) once it saved a
  checkpoint, then starts it again on the same workdir: it must resume and finish."""
  workdir = os.path.join(RUNS_DIR, 'learner_kill')
  shutil.rmtree(workdir, ignore_errors=True)
  overrides = CATCH + [f'train.steps={args.steps}', 'checkpoint.every=4',
                       'train.progress_bar=false', 'actors.backend=ray',
                       'actors.num_actors=2']
  command = [sys.executable, '-m', 'perceiver_agents.cli', 'train', 'agent',
             '--workdir', workdir] + [f'--config.{o}' for o in overrides]
  start = time.perf_counter()
  proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  saved = os.path.join(workdir, 'checkpoints', '4')
  while not os.path.isdir(saved) and proc.poll() is None:
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  second = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
  resumed = [line for line in second.stdout.splitlines() if 'Resumed' in line]
  steps = [r['step'] for r in read_metrics(workdir) if r['split'] == 'train']
  row = {'learner_sigkilled_after_checkpoint': os.path.isdir(saved),
         'resumed_lines': resumed, 'second_run_exit_code': second.returncode,
         'final_step': max(steps) if steps else None,
         'wall_seconds': time.perf_counter() - start}
  print(json.dumps(row), flush=True)
  return row


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('mode', choices=('throughput', 'learning', 'fault'))
  parser.add_argument('--envs', default='catch,entity_micro')
  parser.add_argument('--actors', default='1,2,4')
  parser.add_argument('--steps', type=int, default=0,
                      help='updates per run (default: throughput 12, learning as the '
                           'BENCHMARKS.md rows, fault 12)')
  parser.add_argument('--runs', default='catch,entity_micro')
  parser.add_argument('--backend', default='ray')
  parser.add_argument('--num_actors', type=int, default=4)
  parser.add_argument('--seeds', default='0', help='learning: comma-separated seeds')
  parser.add_argument('--set', action='append', default=[],
                      help='another config override for every run, e.g. actors.queue_size=2')
  parser.add_argument('--out', default='benchmarks/results')
  args = parser.parse_args()
  if args.mode == 'throughput':
    args.steps = args.steps or 12
  elif args.mode == 'fault':
    args.steps = args.steps or 12
  needs_ray = args.mode == 'fault' or (args.mode == 'throughput') or args.backend == 'ray'
  if needs_ray:  # One local Ray for every run of this process.
    # Ray runs its workers at niceness 15 by default; on a machine shared with other
    # work that starves the actors, so they run at the learner's priority here.
    os.environ.setdefault('RAY_worker_niceness', '0')
    import ray  # pylint: disable=g-import-not-at-top
    ray.init(address='local', num_cpus=max(os.cpu_count() or 1, 5), include_dashboard=False,
             logging_level='WARNING')
  rows = {'throughput': throughput, 'learning': learning, 'fault': fault}[args.mode](args)
  os.makedirs(args.out, exist_ok=True)
  name = args.mode + ('_' + '_'.join([args.runs.replace(',', '_'), args.backend,
                                      'seeds' + args.seeds.replace(',', '')])
                      if args.mode == 'learning' else '')
  with open(os.path.join(args.out, f'agents_throughput_{name}.json'), 'w') as f:
    json.dump({'command': ' '.join(['benchmarks/agents_throughput.py'] + sys.argv[1:]),
               'cpus': os.cpu_count(), 'load_average_at_end': os.getloadavg(),
               'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
