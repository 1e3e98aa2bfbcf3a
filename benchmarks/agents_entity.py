"""entity_micro: Perceiver IO vs Transformer vs pooled-MLP entity encoders, IMPALA.

    .venv/bin/python benchmarks/agents_entity.py [--steps 300] [--out benchmarks/results]
        [--parallel]   (one process per encoder, then one combined table and plot)

Trains the `agent` task on env=entity_micro once per encoder (same seed, sizes, and
hyper-parameters), and writes agents_entity.json (the final mean return of the last 100
episodes per encoder, and the curves) and agents_entity.png (return vs. updates). The
best possible return is 8 (8 steps, reward 1 for the right target); a uniformly random
policy gets about 0.5 * E[1 / #enemies] * 8 ~ 1.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from perceiver_agents import learner
from perceiver_agents.learner import read_metrics
from perceiver_agents.tasks import agent

ENCODERS = ('perceiver_io', 'transformer', 'mlp')


def run(encoder: str, steps: int, workdir: str) -> dict:
  shutil.rmtree(workdir, ignore_errors=True)
  config = agent.get_config()
  learner.apply_overrides(config, [
      'env=entity_micro', f'agent.encoder={encoder}', f'train.steps={steps}',
      'train.batch_size=16', 'impala.unroll_length=8', 'agent.num_channels=32',
      'agent.num_latents=8', 'agent.num_layers=2', 'agent.num_heads=2',
      'agent.embedding_size=32', 'agent.entity_size=32', 'agent.torso_size=64',
      'agent.core_size=64', 'optimizer.learning_rate=1e-3', 'checkpoint.every=0',
      'train.log_every=10', 'train.progress_bar=false'])
  start = time.perf_counter()
  task = agent.build(config)
  learner.train(task, config, workdir)
  returns = list(task.actor.returns)
  curve = [(r['step'], r['episode_return']) for r in read_metrics(workdir)
           if r['split'] == 'train']
  return {'encoder': encoder, 'final_return_last_100': sum(returns) / len(returns),
          'episodes': task.actor.episodes, 'wall_seconds': time.perf_counter() - start,
          'curve': curve}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--parallel', action='store_true')
  parser.add_argument('--out', default='benchmarks/results')
  parser.add_argument('--encoders', default=','.join(ENCODERS))
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  results = []
  if args.parallel:
    outs = {e: os.path.join(args.out, f'_{e}') for e in args.encoders.split(',')}
    procs = [subprocess.Popen([sys.executable, __file__, '--steps', str(args.steps),
                               '--encoders', e, '--out', out]) for e, out in outs.items()]
    if any(p.wait() for p in procs):
      raise SystemExit('a run failed')
    for out in outs.values():
      with open(os.path.join(out, 'agents_entity.json')) as f:
        results += json.load(f)
      shutil.rmtree(out)
  else:
    for encoder in args.encoders.split(','):
      results.append(run(encoder, args.steps, f'/tmp/agents_entity_{encoder}'))
      print(json.dumps({k: v for k, v in results[-1].items() if k != 'curve'}), flush=True)
  with open(os.path.join(args.out, 'agents_entity.json'), 'w') as f:
    json.dump(results, f, indent=1)
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for r in results:
    steps, values = zip(*r['curve'])
    ax.plot(steps, values, label=r['encoder'])
  ax.set_xlabel('updates (16 trajectories x 8 steps each)')
  ax.set_ylabel('mean return, last 100 episodes (max 8)')
  ax.set_title('entity_micro: attack the enemy nearest your weakest unit')
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, 'agents_entity.png'), dpi=100)


if __name__ == '__main__':
  main()
