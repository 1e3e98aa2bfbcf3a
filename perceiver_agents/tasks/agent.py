"""IMPALA agent with a swappable (Perceiver IO, Transformer, MLP) observation encoder.

    perceiver-agents train agent --workdir /tmp/catch --config.env=catch \
        --config.agent.spatial_encoder=perceiver_io
    perceiver-agents train agent --workdir /tmp/micro --config.env=entity_micro \
        --config.agent.encoder=transformer

`env` is one of perceiver_agents.agents.envs.NAMES; `agent.encoder` picks the entity
encoder (perceiver_io | transformer | mlp | package.module:factory for your own, see
perceiver_agents/agents/encoders.py for the contract), `agent.spatial_encoder` the planes
encoder (conv | perceiver_io). `train.batch_size` is the number of environments the actor
runs (trajectories per update); `train.steps` counts updates. The update, optimizer,
checkpoints, metrics ('train/episode_return' = mean return of the last 100 episodes) and
progress bar are perceiver_agents.learner's. A resumed run restores the parameters and
optimizer exactly; the environments start new episodes.
"""

import ml_collections

from perceiver_agents import learner
from perceiver_agents.agents import envs as envs_lib
from perceiver_agents.agents import impala
from perceiver_agents.agents import networks
from perceiver_agents.tasks.base import Task


def get_config() -> ml_collections.ConfigDict:
  config = learner.default_config()
  config.env = 'catch'
  config.agent = networks.network_config()
  config.impala = impala.loss_config()
  config.train.steps = 500
  config.train.batch_size = 16        # Environments = trajectories per update.
  config.train.log_every = 10
  config.eval.every = 0
  config.eval.batch_size = 16
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = 'constant'
  config.optimizer.warmup_steps = 0
  config.optimizer.clip_norm = 40.0
  config.checkpoint.every = 100
  return config


def build(config: ml_collections.ConfigDict, *, envs=None) -> Task:
  """The agent as a learner Task: `acting_batch` runs the actor with the current params.

  `envs` (optional): train.batch_size ready-made environments instead of config.env's.
  """
  num_envs = config.train.batch_size
  if envs is None:
    envs = [envs_lib.make(config.env, seed=config.seed * 10_000 + i)
            for i in range(num_envs)]
  if len(envs) != num_envs:
    raise ValueError(f'envs: expected train.batch_size={num_envs} environments, got '
                     f'{len(envs)}.')
  env_spec = envs[0].env_spec()
  step_fn, model = impala.make_networks(env_spec, config.agent)
  actor = impala.Actor(envs=envs, env_spec=env_spec, step_fn=step_fn,
                       core_size=config.agent.core_size,
                       unroll_length=config.impala.unroll_length, seed=config.seed)
  loss_and_metrics = impala.impala_loss(env_spec, config.impala)

  def loss(outputs, batch):
    return loss_and_metrics(outputs, batch)[0]

  def metrics(outputs, batch):
    values = dict(loss_and_metrics(outputs, batch)[1])
    values['episode_return'] = batch['episode_return']
    return values

  def eval_batches(batch_size):
    if actor.last_batch is None:
      raise ValueError('agent: evaluation reports the trajectories of the last update '
                       'of a training run (eval.every); a fresh process has none.')
    batch = actor.last_batch
    n = len(batch['episode_return'])
    for i in range(0, n, batch_size):
      yield {k: _rows(v, i, i + batch_size) for k, v in batch.items()}

  task = Task(model=model, loss=loss, metrics=metrics,
              train_batch=lambda step: actor.zeros_batch(), eval_batches=eval_batches,
              acting_batch=lambda step, params: actor.collect(params))
  object.__setattr__(task, 'actor', actor)  # For benchmarks and tests.
  return task


def _rows(tree, start, stop):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda x: x[start:stop], tree)
