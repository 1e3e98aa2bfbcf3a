"""IMPALA end to end on pysc2's mock SC2 environment (real observation and action specs).

    .venv/bin/python benchmarks/agents_sc2_mock.py [--steps 50]

The mock (pysc2.env.mock_sc2_env.SC2TestEnv) replays one observation; here it shows four
feature units, a four-unit multi-selection, and besides its default available actions
select_unit (select_unit_act, select_unit_id: a unit pointer) and Attack_screen (queued,
screen), so that point, pointer and flag arguments are all sampled, sent to pysc2 as
FunctionCalls, and trained on. Prints the updates done, the pysc2 functions called and
how often each argument kind was used.
"""

import argparse
import collections
import json
import shutil
import time

import numpy as np

from perceiver_agents import learner
from perceiver_agents.agents.envs import pysc2 as sc2
from perceiver_agents.tasks import agent
from pysc2.lib import actions


class CountingSC2Env(sc2.SC2Env):
  """SC2Env that counts the FunctionCalls it sends to pysc2."""

  calls = collections.Counter()
  arguments = collections.Counter()

  def function_call(self, action):
    call = super().function_call(action)
    function = actions.FUNCTIONS[call.function]
    CountingSC2Env.calls[function.name] += 1
    for arg in function.args:
      CountingSC2Env.arguments[arg.name] += 1
    return call


def richer_mock(env: sc2.SC2Env, seed: int) -> sc2.SC2Env:
  rng = np.random.default_rng(seed)
  obs = env.pysc2_env.next_timestep[0].observation
  units = np.zeros([4, sc2.UNIT_FEATURES], np.int64)
  units[:, 0] = [48, 48, 105, 105]          # unit_type: marines, zerglings
  units[:, 1] = [1, 1, 4, 4]                # alliance: self, enemy
  units[:, 2] = rng.integers(10, 45, 4)     # health
  units[:, 12:14] = rng.integers(0, 16, [4, 2])  # x, y on the screen
  obs['feature_units'] = units
  obs['multi_select'] = np.zeros([4, 7], np.int64)
  extra = [actions.FUNCTIONS.select_unit.id, actions.FUNCTIONS.Attack_screen.id]
  obs['available_actions'] = np.concatenate([obs['available_actions'], extra])
  return env


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--steps', type=int, default=50)
  parser.add_argument('--encoder', default='perceiver_io')
  parser.add_argument('--workdir', default='/tmp/agents_sc2_mock')
  args = parser.parse_args()
  shutil.rmtree(args.workdir, ignore_errors=True)
  config = agent.get_config()
  learner.apply_overrides(config, [
      'env=sc2_mock', f'agent.encoder={args.encoder}', f'train.steps={args.steps}',
      'train.batch_size=4', 'impala.unroll_length=8', 'agent.num_channels=32',
      'agent.num_latents=8', 'agent.num_layers=1', 'agent.num_heads=2',
      'agent.embedding_size=32', 'agent.entity_size=16', 'agent.torso_size=64',
      'agent.core_size=64', 'checkpoint.every=0', 'train.log_every=10'])
  start = time.perf_counter()
  task = agent.build(config, env_factory=lambda seed: richer_mock(
      CountingSC2Env(mock=True, seed=seed), seed))
  result = learner.train(task, config, args.workdir)
  print(json.dumps({
      'updates': result.step, 'env_steps': result.train_metrics['env_steps'],
      'episodes': result.train_metrics['episodes'],
      'wall_seconds': round(time.perf_counter() - start, 1),
      'final_loss': result.train_metrics.get('loss'),
      'function_calls': dict(CountingSC2Env.calls.most_common()),
      'argument_uses': dict(CountingSC2Env.arguments.most_common())}))


if __name__ == '__main__':
  main()
