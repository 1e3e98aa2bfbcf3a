"""IMPALA agent with a swappable (Perceiver IO, Transformer, MLP) observation encoder.

    perceiver-agents train agent --workdir /tmp/catch --config.env=catch \
        --config.agent.spatial_encoder=perceiver_io
    perceiver-agents train agent --workdir /tmp/micro --config.env=entity_micro \
        --config.agent.encoder=transformer \
        --config.actors.backend=ray --config.actors.num_actors=4

`env` is one of perceiver_agents.agents.envs.NAMES (`env_step_delay_ms` adds a fixed
latency to each of its steps); `agent.encoder` picks the entity encoder (perceiver_io |
transformer | mlp | package.module:factory for your own, see
perceiver_agents/agents/encoders.py for the contract), `agent.spatial_encoder` the planes
encoder (conv | perceiver_io). `actors` says where the actors run (inline | threads |
ray, agents/impala/config.py; docs/agents.md); `train.batch_size` is the number of
trajectories per update; `train.steps` counts updates. The update, optimizer,
checkpoints, metrics (actor metrics such as 'train/episode_return', the mean return of
the last 100 episodes, and 'train/policy_lag_mean' come from the actors) and progress bar
are perceiver_agents.learner's. A resumed run restores the parameters and optimizer
exactly and starts new actors; the inline backend also restores its actors' state
(environments included, where they can be pickled), so its resumed runs are exact.
"""

import ml_collections

from perceiver_agents import learner
from perceiver_agents.agents import networks
from perceiver_agents.agents.impala import builder
from perceiver_agents.agents.impala import config as impala_config
from perceiver_agents.tasks.base import Task


# The small variant (--config.preset=local, tasks/base.py): trains end to end in under a
# minute on 2 CPU cores.
PRESETS = {'local': (
    'agent.embedding_size=8', 'agent.entity_size=8', 'agent.num_latents=4',
    'agent.spatial_num_latents=4', 'agent.num_channels=8', 'agent.num_layers=1',
    'agent.num_heads=2', 'agent.torso_size=16', 'agent.core_size=8',
    'impala.unroll_length=3', 'train.batch_size=2', 'eval.batch_size=2',
    'train.steps=100', 'train.log_every=10', 'eval.every=0', 'checkpoint.every=0')}


def get_config() -> ml_collections.ConfigDict:
  config = learner.default_config()
  config.env = 'catch'
  config.env_step_delay_ms = 0.0
  config.agent = networks.network_config()
  config.impala = impala_config.loss_config()
  config.actors = impala_config.actors_config()
  config.train.steps = 500
  config.train.batch_size = 16        # Trajectories per update.
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


def build(config: ml_collections.ConfigDict, *, env_factory=None) -> Task:
  """The agent as a learner Task (agents/impala/builder.py).

  `env_factory` (optional): seed -> environment, instead of config.env's.
  """
  return builder.ImpalaBuilder(config, env_factory=env_factory).task()
