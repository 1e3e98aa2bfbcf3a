"""Wires the IMPALA networks, actors (on the configured backend) and loss into a Task.

    agent = ImpalaBuilder(config)        # config: tasks/agent.py's get_config()
    task = agent.task()                  # what perceiver_agents.learner.train runs
    learner.train(task, config, workdir)
    agent.iterator.returns               # the run's last 100 episode returns

The task's `train_iterator(start_step)` starts fresh actors (a resumed run gets new
ones; the inline backend also gets its saved actor state back, see learner/data.py) and
returns a backends.TrajectoryIterator of train.batch_size trajectories per update.
"""

from typing import Callable, NamedTuple, Optional

import dm_env
import jax
import ml_collections

from perceiver_agents.agents import envs as envs_lib
from perceiver_agents.agents.impala import acting, backends
from perceiver_agents.agents.impala import networks as networks_lib
from perceiver_agents.agents.impala.config import BACKENDS
from perceiver_agents.tasks.base import Task

EnvFactory = Callable[[int], dm_env.Environment]   # seed -> environment


class ActorLayout(NamedTuple):
  """How a process's share of the batch comes from actors."""
  num_actors: int
  envs_per_actor: int
  batch_size: int        # trajectories per update on this process
  queue_size: int        # unrolls acted ahead of the learner (threads, ray)


def actor_layout(config: ml_collections.ConfigDict, *,
                 num_processes: Optional[int] = None) -> ActorLayout:
  """Checks the `actors` section against train.batch_size; raises a clear ValueError."""
  a = config.actors
  if a.backend not in BACKENDS:
    raise ValueError(f'actors.backend must be one of {BACKENDS}, got {a.backend!r}.')
  if a.num_actors < 1:
    raise ValueError(f'actors.num_actors must be >= 1, got {a.num_actors}.')
  num_processes = jax.process_count() if num_processes is None else num_processes
  total = config.train.batch_size
  if total < 1 or total % num_processes:
    raise ValueError(f'train.batch_size={total} must be a positive multiple of the '
                     f'number of processes ({num_processes}).')
  local = total // num_processes
  envs = a.envs_per_actor
  if envs < 0:
    raise ValueError(f'actors.envs_per_actor must be >= 0 (0: train.batch_size / '
                     f'actors.num_actors), got {envs}.')
  if envs == 0:
    if local % a.num_actors:
      raise ValueError(
          f'train.batch_size={local} (per process) cannot be split evenly over '
          f'actors.num_actors={a.num_actors}; set actors.envs_per_actor to a divisor of '
          f'it.')
    envs = local // a.num_actors
  if local % envs:
    raise ValueError(
        f'train.batch_size={local} (per process) is not a multiple of '
        f'actors.envs_per_actor={envs}: whole actor unrolls ({envs} trajectories each) '
        f'cannot fill a batch.')
  if a.queue_size < 0:
    raise ValueError(f'actors.queue_size must be >= 0, got {a.queue_size}.')
  return ActorLayout(a.num_actors, envs, local, a.queue_size or local // envs)


class ActorBuilder:
  """(actor_id, incarnation) -> a fresh acting.Actor of `config` (its own environments).

  Picklable with its config (the Ray backend builds one in every actor process).
  `env_factory` (optional) makes the environments instead of config.env.
  """

  def __init__(self, config: ml_collections.ConfigDict, *, envs_per_actor: int,
               env_factory: Optional[EnvFactory] = None):
    self._config = config
    self._env_factory = env_factory
    self._envs_per_actor = envs_per_actor
    probe = self.make_env(self.env_seed(0, 0, 0))
    self.env_spec = probe.env_spec()
    self._spare = probe   # Actor 0's first environment, not made twice.
    self.networks = networks_lib.make_networks(self.env_spec, config.agent)
    self._policy = None

  def make_env(self, seed: int) -> dm_env.Environment:
    if self._env_factory is not None:
      return self._env_factory(seed)
    return envs_lib.make(self._config.env, seed=seed,
                         step_delay_ms=self._config.env_step_delay_ms)

  def env_seed(self, actor_id: int, env_index: int, incarnation: int) -> int:
    index = actor_id * self._envs_per_actor + env_index
    return self._config.seed * 10_000 + index + incarnation * 100_003

  def __getstate__(self):
    return {'config': self._config, 'envs_per_actor': self._envs_per_actor,
            'env_factory': self._env_factory}

  def __setstate__(self, state):
    self.__init__(state['config'], envs_per_actor=state['envs_per_actor'],
                  env_factory=state['env_factory'])

  def close_spare(self) -> None:
    if self._spare is not None:
      self._spare.close()
      self._spare = None

  def __call__(self, actor_id: int, incarnation: int) -> acting.Actor:
    if self._policy is None:
      self._policy = networks_lib.make_policy(self.networks, self.env_spec)
    envs = []
    for j in range(self._envs_per_actor):
      if (actor_id, j, incarnation) == (0, 0, 0) and self._spare is not None:
        envs.append(self._spare)
        self._spare = None
      else:
        envs.append(self.make_env(self.env_seed(actor_id, j, incarnation)))
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self._config.seed),
                                                actor_id), incarnation)
    return acting.Actor(envs=envs, env_spec=self.env_spec, policy=self._policy,
                        core_size=self.networks.core_size,
                        unroll_length=self._config.impala.unroll_length, key=key)


class ImpalaBuilder:
  """The agent of `config` as a learner Task; keeps the run's TrajectoryIterator."""

  def __init__(self, config: ml_collections.ConfigDict, *,
               env_factory: Optional[EnvFactory] = None):
    self.config = config
    self.layout = actor_layout(config)
    if config.actors.backend == 'ray':  # Fail before any environment starts.
      from perceiver_agents.agents.impala import ray_backend  # pylint: disable=g-import-not-at-top
      ray_backend.import_ray()
      ray_backend.check_address(config.actors.ray_address)
    self.actor_builder = ActorBuilder(config, envs_per_actor=self.layout.envs_per_actor,
                                      env_factory=env_factory)
    self.env_spec = self.actor_builder.env_spec
    self.networks = self.actor_builder.networks
    self.iterator: Optional[backends.TrajectoryIterator] = None

  def make_pool(self):
    a, layout = self.config.actors, self.layout
    if a.backend == 'inline':
      return backends.InlineActors(self.actor_builder, num_actors=layout.num_actors,
                                   max_restarts=a.max_restarts)
    if a.backend == 'threads':
      return backends.ThreadActors(self.actor_builder, num_actors=layout.num_actors,
                                   queue_size=layout.queue_size,
                                   max_restarts=a.max_restarts, on_demand=self.on_demand)
    from perceiver_agents.agents.impala import ray_backend  # pylint: disable=g-import-not-at-top
    self.actor_builder.close_spare()  # Every environment lives in an actor process.
    return ray_backend.RayActors(
        self.actor_builder, num_actors=layout.num_actors, queue_size=layout.queue_size,
        max_restarts=a.max_restarts, address=a.ray_address,
        cpus_per_actor=a.ray_cpus_per_actor, on_demand=self.on_demand)

  @property
  def on_demand(self) -> bool:
    """max_policy_lag 0 on threads or ray: the actors act only for the batch being
    assembled, with the newest parameters, rather than ahead of the learner with
    parameters whose trajectories would all be dropped (inline always acts so)."""
    a = self.config.actors
    return a.max_policy_lag == 0 and a.backend != 'inline'

  def train_iterator(self, start_step: int) -> backends.TrajectoryIterator:
    del start_step  # Actors act with the parameters the learner publishes.
    if self.iterator is not None:
      self.iterator.close()
    self.iterator = backends.TrajectoryIterator(
        self.make_pool(), batch_size=self.layout.batch_size,
        max_policy_lag=self.config.actors.max_policy_lag,
        unrolls_per_batch=(self.layout.batch_size // self.layout.envs_per_actor
                           if self.on_demand else 0))
    return self.iterator

  def task(self) -> Task:
    # Imported here: rlax (with TensorFlow Probability) is the learner's, and an actor
    # process that unpickles an ActorBuilder need not load it.
    from perceiver_agents.agents.impala import learning  # pylint: disable=g-import-not-at-top
    loss_and_metrics = learning.impala_loss(self.env_spec, self.config.impala)
    zeros = acting.zeros_trajectories(
        self.env_spec, num=self.config.train.batch_size,
        unroll_length=self.config.impala.unroll_length,
        core_size=self.networks.core_size)

    def eval_batches(batch_size):
      last = self.iterator.last_batch if self.iterator is not None else None
      if last is None:
        raise ValueError('agent: evaluation reports the trajectories of the last update '
                         'of a training run (eval.every); a fresh process has none.')
      n = len(last['param_version'])
      for i in range(0, n, batch_size):
        yield jax.tree.map(lambda x, i=i: x[i:i + batch_size], last)

    return Task(model=self.networks.unroll,
                loss=lambda outputs, batch: loss_and_metrics(outputs, batch)[0],
                metrics=lambda outputs, batch: loss_and_metrics(outputs, batch)[1],
                train_batch=lambda step: zeros, eval_batches=eval_batches,
                train_iterator=self.train_iterator)
