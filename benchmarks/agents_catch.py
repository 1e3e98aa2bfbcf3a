"""bsuite catch/0 with a Perceiver IO encoder, IMPALA.

    .venv/bin/python benchmarks/agents_catch.py [--steps 300] [--workdir /tmp/agents_catch]
        [--env catch_entities|catch] [--encoder perceiver_io|transformer|mlp|conv]

--env catch_entities (default): the board's non-zero cells as an entity set, encoded by
the Perceiver IO entity encoder (`agent.encoder`). --env catch: the board as pixels,
encoded by `agent.spatial_encoder` (perceiver_io = pixels + Fourier positions, or conv).

Trains through `perceiver_agents.learner.train` (the `agent` task) and prints the mean
episode return of the last 100 episodes, the episodes and environment steps seen, and
the wall time. Target: >= 0.9.
"""

import argparse
import json
import shutil
import time

from perceiver_agents import learner
from perceiver_agents.tasks import agent


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--workdir', default='/tmp/agents_catch')
  parser.add_argument('--env', default='catch_entities')
  parser.add_argument('--lr', type=float, default=1e-3)
  parser.add_argument('--encoder', default='perceiver_io')
  args = parser.parse_args()
  shutil.rmtree(args.workdir, ignore_errors=True)
  config = agent.get_config()
  learner.apply_overrides(config, [
      f'env={args.env}', f'train.steps={args.steps}',
      (f'agent.encoder={args.encoder}' if args.env == 'catch_entities'
       else f'agent.spatial_encoder={args.encoder}'),
      'train.batch_size=16', 'impala.unroll_length=20', 'agent.num_channels=32',
      'agent.spatial_num_latents=8', 'agent.num_layers=2', 'agent.embedding_size=64',
      'agent.torso_size=64', 'agent.core_size=64', f'optimizer.learning_rate={args.lr}',
      'checkpoint.every=0', 'train.log_every=20'])
  start = time.perf_counter()
  task = agent.build(config)
  result = learner.train(task, config, args.workdir)
  seconds = time.perf_counter() - start
  metrics = result.train_metrics  # The actors' metrics of the last update.
  print(json.dumps({
      'env': args.env, 'encoder': args.encoder, 'updates': result.step,
      'episodes': metrics['episodes'], 'env_steps': metrics['env_steps'],
      'mean_return_last_100': metrics['episode_return'],
      'wall_seconds': round(seconds, 1)}))


if __name__ == '__main__':
  main()
