"""StarCraft micromanagement (JaxMARL's SMAX) with on-device (Anakin) training.

    perceiver-agents train smax --workdir /tmp/smax_3m --config.env.map=3m \
        --config.agent.encoder=perceiver_io
    perceiver-agents eval smax --workdir /tmp/smax_3m [--config.eval.episodes=256]
    perceiver-agents predict smax --checkpoint /tmp/smax_3m --out battle.gif

`env.map` is a SMAX map (3m, 2s3z, 5m_vs_6m, ...), a custom unit mix ('3m2M_vs_6m') or a
mixture 'a+b+c' (environments split evenly over the maps, padded to the largest); any
other pure-JAX environment goes in `env.id` (e.g. 'gymnax:CartPole-v1'), see
perceiver_agents/agents/envs/jax_envs. `agent.encoder`: perceiver_io | transformer | mlp
(agents/unit_controller.py); `agent.view`: local (each ally on its own observation, as
IPPO) | global (one centralised pass, one query per ally). `rl` holds the rollout and
loss settings (agents/anakin/losses.py; ppo or vtrace), `rl.env_steps` the budget;
`rl.num_seeds=S` trains seeds seed..seed+S-1 side by side in one compiled program.
Checkpoints, metrics.jsonl, the progress bar and SIGINT/SIGTERM (checkpoint, then exit
128 + signal) are perceiver_agents.learner's (agents/anakin/loop.py); a resumed run
continues the same episodes.

`eval` plays `eval.episodes` fresh episodes with the latest parameters and reports the
win rate, mean return and mean episode length; `eval.map` evaluates on another map than
the one trained on (zero-shot), with the same padded shapes when it fits; with several
seeds it reports their means and each seed's. `predict` renders config.seed's policy.
"""

import argparse
import json
import os
import sys
from typing import Any

import jax
import ml_collections
import numpy as np

from perceiver_agents import learner
from perceiver_agents.agents import anakin
from perceiver_agents.agents.envs import jax_envs
from perceiver_agents.tasks import workdir as workdir_lib
from perceiver_agents.tasks.base import CommandArgs


# The small variant (--config.preset=local, tasks/base.py): trains end to end in under a
# minute on 2 CPU cores.
PRESETS = {'local': (
    'rl.num_envs=4', 'rl.unroll_length=4', 'rl.epochs=1', 'rl.num_minibatches=1',
    'rl.env_steps=0', 'agent.hidden_size=16', 'eval.episodes=8', 'train.steps=20',
    'train.log_every=5', 'eval.every=0', 'checkpoint.every=0')}


def get_config() -> ml_collections.ConfigDict:
  config = learner.default_config()
  config.env = ml_collections.ConfigDict()
  config.env.map = '3m'
  config.env.id = ''              # another pure-JAX environment, e.g. 'gymnax:CartPole-v1'
  config.env.max_allies = 0       # > 0: pad to this many allies (to share shapes across maps)
  config.env.max_enemies = 0
  config.agent = anakin.network_config()
  config.rl = anakin.loss_config()
  config.rl.env_steps = 2_000_000
  config.train.log_every = 5      # updates
  config.eval.episodes = 128
  config.eval.max_steps = 110     # SMAX episodes end after 100 steps
  config.eval.greedy = False
  config.eval.map = ''            # evaluate on this map instead of env.map (zero-shot)
  # JaxMARL IPPO's optimizer settings (Adam lr 4e-3, eps 1e-5, clip 0.25, lr annealed
  # linearly to 0 over the run).
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 4e-3
  config.optimizer.eps = 1e-5
  config.optimizer.schedule = 'linear'
  config.optimizer.warmup_steps = 0
  config.optimizer.clip_norm = 0.25
  config.checkpoint.every = 25
  return config


def make_env(config: ml_collections.ConfigDict, map_name: str = ''):
  """The training environment of `config` (or map `map_name` with the same padding)."""
  if config.env.id and not map_name:
    return jax_envs.make(config.env.id)
  name = map_name or config.env.map
  if '+' in name:
    return jax_envs.make(f'smax:{name}')
  pads = {k: v for k, v in (('max_allies', config.env.max_allies),
                            ('max_enemies', config.env.max_enemies)) if v > 0}
  return jax_envs.make(f'smax:{name}', **pads)


def _eval_env(config: ml_collections.ConfigDict, train_env):
  """eval.map padded like the training environment (so that the parameters apply)."""
  if not config.eval.map:
    return train_env
  from perceiver_agents.agents.envs.jax_envs import smax  # pylint: disable=g-import-not-at-top
  padded = dict(max_allies=train_env.num_agents,
                max_enemies=train_env.num_actions - smax.NUM_MOVES)
  return smax.SMAXEnv(config.eval.map, **padded)


class AnakinTask:
  """What `perceiver-agents train|eval smax` run: the Anakin loop of agents/anakin."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.env = make_env(config)

  def train(self, workdir: str, *, on_ready=None) -> dict:
    """The run's summary; without 'eval' and with 'interrupted_by' (the signal number)
    when SIGINT/SIGTERM stopped it (its checkpoint saved, to resume from)."""
    result = anakin.train(self.env, self.config, workdir, on_ready=on_ready)
    summary = {'step': result.step, 'env_steps': result.env_steps, 'train': result.metrics}
    if result.interrupted_by is not None:
      return dict(summary, interrupted_by=result.interrupted_by)
    return dict(summary, eval=self.evaluate(workdir))

  def evaluate(self, workdir: str) -> dict:
    """Win rate, return and length over eval.episodes episodes; with rl.num_seeds > 1,
    their means over the seeds and each seed's under 'seeds' (seed i played with the
    evaluation key a run of that seed alone would use)."""
    config = self.config
    env = _eval_env(config, self.env)
    programs = anakin.build(self.env, config, sharding_mesh())
    params, step = anakin.load_params(self.env, config, workdir, programs=programs)
    where = dict(step=step, map=config.eval.map or config.env.id or config.env.map)
    seeds = []
    for i in range(programs.num_seeds):
      results = anakin.run_episodes(
          env, programs.network, anakin.seed_slice(params, i, programs.num_seeds),
          jax.random.PRNGKey(config.seed + i + 1), num_envs=config.eval.episodes,
          max_steps=config.eval.max_steps, greedy=config.eval.greedy)
      seeds.append(dict(summarize(results), seed=config.seed + i))
    if len(seeds) == 1:
      return dict({k: v for k, v in seeds[0].items() if k != 'seed'}, **where)
    means = {k: float(np.nanmean([s[k] for s in seeds])) for k in seeds[0] if k != 'seed'}
    return dict(means, seeds=seeds, **where)


def sharding_mesh():
  return learner.make_mesh(jax.devices()[:1])


def summarize(results: dict) -> dict:
  """Win rate, mean return and length over the finished episodes of run_episodes."""
  done = np.asarray(results['finished'])
  n = int(done.sum())
  mean = lambda k: float(np.asarray(results[k])[done].mean()) if n else float('nan')
  return {'episodes': n, 'win_rate': mean('won'), 'episode_return': mean('return'),
          'episode_length': mean('length')}


def build(config: ml_collections.ConfigDict) -> AnakinTask:
  return AnakinTask(config)


def predict(command: CommandArgs) -> int:
  """`predict smax --checkpoint WORKDIR --out battle.gif`: one episode, rendered."""
  parser = argparse.ArgumentParser(prog='perceiver-agents predict smax',
                                   description='Render one SMAX episode of a checkpoint.')
  parser.add_argument('--out', default='battle.gif', help='the animation (.gif)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--greedy', action='store_true')
  known = parser.parse_args(command.args)
  checkpoint = command.require_checkpoint('a `train smax` workdir')
  config = workdir_lib.run_config(sys.modules[__name__], checkpoint, command.overrides,
                                  task='smax')
  task = AnakinTask(config)
  env = _eval_env(config, task.env)
  if not hasattr(env, 'env'):
    raise ValueError('env: rendering is for single SMAX maps (not env.id or mixtures).')
  programs = anakin.build(task.env, config, sharding_mesh())
  params, _ = anakin.load_params(task.env, config, checkpoint, programs=programs)
  params = anakin.seed_slice(params, 0, programs.num_seeds)  # the run of config.seed
  results = anakin.run_episodes(
      env, programs.network, params, jax.random.PRNGKey(known.seed), num_envs=1,
      max_steps=config.eval.max_steps, greedy=known.greedy, record=True)
  length = int(results['length'][0])
  render(env, results, length, known.out)
  print(json.dumps(dict(summarize(results), out=known.out)))
  return 0


def render(env, results: dict, length: int, out: str) -> None:
  """Writes the first `length` steps of a recorded episode with SMAX's visualiser."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from jaxmarl.viz.visualizer import SMAXVisualizer  # pylint: disable=g-import-not-at-top
  states, actions, keys = results['states'], results['actions'], results['keys']
  agents = env.env.agents
  seq = []
  for t in range(length):
    state = jax.tree.map(lambda x, t=t: x[t], states)
    seq.append((keys[t], state, {a: actions[t, i] for i, a in enumerate(agents)}))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  SMAXVisualizer(env.env, seq).animate(save_fname=out, view=False)
