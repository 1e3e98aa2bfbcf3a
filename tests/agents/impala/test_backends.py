"""Actor backends (inline, threads): one trajectory layout, policy lag, drops, restarts."""

import logging
import threading
import time

import jax
import numpy as np
import pytest

from perceiver_agents.agents import envs as envs_lib
from perceiver_agents.agents.impala import backends, builder


def layout(batch):
  """{path: (shape, dtype)} of a batch."""
  leaves = jax.tree_util.tree_flatten_with_path(batch)[0]
  return {jax.tree_util.keystr(p): (np.shape(x), np.asarray(x).dtype) for p, x in leaves}


def init_params(agent):
  task = agent.task()
  params, _ = task.model.init(jax.random.PRNGKey(0), task.train_batch(0), is_training=True)
  return task, params


def rho_stats(task, params, batch):
  outputs, _ = task.model.apply(params, {}, jax.random.PRNGKey(1), batch, is_training=False)
  metrics = task.metrics(outputs, batch)
  return float(np.max(metrics['rho_max'])), float(np.min(metrics['rho_min']))


@pytest.mark.parametrize('backend', ['inline', 'threads'])
def test_backends_give_batches_of_the_zeros_layout_acted_by_the_published_params(
    backend, tiny_config):
  config = tiny_config(f'actors.backend={backend}', 'actors.num_actors=2')
  agent = builder.ImpalaBuilder(config)
  task, params = init_params(agent)
  iterator = agent.train_iterator(0)
  try:
    iterator.publish(params, 0)
    batch = next(iterator)
    assert layout(batch) == layout(task.train_batch(0))
    np.testing.assert_array_equal(batch['param_version'], 0)
    # Acted with these parameters: the importance weights are 1 (up to round-off);
    # judged by other parameters, they are not.
    high, low = rho_stats(task, params, batch)
    assert 0.999 < low <= high < 1.001
    other = jax.tree.map(lambda x: x * 1.5 + 0.1, params)
    high, low = rho_stats(task, other, batch)
    assert high > 1.01 or low < 0.99
    metrics = iterator.metrics()
    assert metrics['policy_lag_max'] == 0 and metrics['env_steps'] > 0
  finally:
    iterator.close()


def test_threads_report_policy_lag_and_drop_trajectories_older_than_the_limit(tiny_config):
  config = tiny_config('actors.backend=threads', 'actors.num_actors=2')
  agent = builder.ImpalaBuilder(config)
  _, params = init_params(agent)
  iterator = agent.train_iterator(0)
  try:
    iterator.publish(params, 0)
    next(iterator)
    time.sleep(1.0)  # The actors fill the queue (and wait) with version-0 unrolls.
    iterator.publish(params, 5)
    batch = next(iterator)
    np.testing.assert_array_equal(batch['param_version'], 0)
    assert iterator.metrics()['policy_lag_max'] == 5
  finally:
    iterator.close()

  config.actors.max_policy_lag = 2
  iterator = builder.ImpalaBuilder(config).train_iterator(0)
  try:
    iterator.publish(params, 0)
    next(iterator)
    time.sleep(1.0)
    iterator.publish(params, 5)
    batch = next(iterator)
    np.testing.assert_array_equal(batch['param_version'], 5)
    metrics = iterator.metrics()
    assert metrics['policy_lag_max'] == 0 and metrics['dropped_trajectories'] >= 4
  finally:
    iterator.close()


def test_max_policy_lag_0_acts_on_demand_with_the_newest_params(tiny_config):
  config = tiny_config('actors.backend=threads', 'actors.num_actors=2',
                       'actors.max_policy_lag=0')
  agent = builder.ImpalaBuilder(config)
  _, params = init_params(agent)
  iterator = agent.train_iterator(0)
  try:
    for step in (0, 1, 2):
      iterator.publish(params, step)
      np.testing.assert_array_equal(next(iterator)['param_version'], step)
      time.sleep(0.5)  # Actors that act ahead would queue the next batch's unrolls now.
      assert iterator._pool._queue.qsize() == 0  # pylint: disable=protected-access
    metrics = iterator.metrics()
    assert metrics['policy_lag_max'] == 0 and metrics['dropped_trajectories'] == 0
  finally:
    iterator.close()


def test_unroll_credits_on_demand_are_only_those_requested():
  stop = threading.Event()
  credits = backends.UnrollCredits(0, on_demand=True)
  assert not credits.take(stop, block=False)
  credits.request(2)
  assert credits.take(stop, block=False) and credits.take(stop, block=False)
  credits.returned()   # Taking an unroll frees nothing on demand.
  assert not credits.take(stop, block=False)
  with pytest.raises(RuntimeError, match='not on demand'):
    backends.UnrollCredits(2).request(1)
  with pytest.raises(ValueError, match='at least one unroll'):
    backends.UnrollCredits(0)


class _Flaky:
  """catch whose environments of a first incarnation (seed < 100_003) raise at step 2."""

  def __init__(self, seed):
    self._env = envs_lib.make('catch', seed=seed)
    self._fails = seed < 100_003
    self._steps = 0

  def __getattr__(self, name):
    return getattr(self._env, name)

  def step(self, action):
    self._steps += 1
    if self._fails and self._steps == 2:
      raise RuntimeError('the game crashed')
    return self._env.step(action)


@pytest.mark.parametrize('backend', ['inline', 'threads'])
def test_failed_actors_are_restarted_with_fresh_envs_then_the_run_stops(
    backend, tiny_config, caplog):
  config = tiny_config(f'actors.backend={backend}', 'actors.num_actors=2',
                       'actors.max_restarts=2')
  agent = builder.ImpalaBuilder(config, env_factory=_Flaky)
  _, params = init_params(agent)
  iterator = agent.train_iterator(0)
  try:
    with caplog.at_level(logging.WARNING, logger='perceiver_agents.agents.impala'):
      iterator.publish(params, 0)
      next(iterator)
      next(iterator)
    assert iterator.metrics()['actor_restarts'] == 2
    assert caplog.text.count('restarting it with fresh environments') == 2
    assert 'the game crashed' in caplog.text
  finally:
    iterator.close()

  config.actors.max_restarts = 1
  iterator = builder.ImpalaBuilder(config, env_factory=_Flaky).train_iterator(0)
  try:
    iterator.publish(params, 0)
    with pytest.raises(backends.ActorFailure, match='the game crashed'):
      for _ in range(3):
        next(iterator)
  finally:
    iterator.close()


class _Leaf:
  """A parameter leaf whose computation finishes when the test says so."""

  def __init__(self):
    self.ready = False
    self.waited = False

  def is_ready(self):
    return self.ready

  def block_until_ready(self):
    self.waited = True
    self.ready = True
    return self


def test_parameter_source_hands_out_the_newest_computed_version_without_waiting():
  source = backends.ParameterSource()
  source._copy = lambda tree: tree  # pylint: disable=protected-access
  v0, v1, v2 = _Leaf(), _Leaf(), _Leaf()
  source.publish({'w': v0}, 0)
  assert source.latest() == ({'w': v0}, 0)   # Nothing computed yet: the first waits.
  assert v0.waited
  source.publish({'w': v1}, 1)                # In flight: actors keep acting with v0.
  assert source.latest() == ({'w': v0}, 0) and not v1.waited
  v1.ready = True
  source.publish({'w': v2}, 2)
  assert source.latest() == ({'w': v1}, 1) and not v2.waited
  assert source.latest(newest=True) == ({'w': v2}, 2) and v2.waited  # inline: no lag.
  assert source.latest() == ({'w': v2}, 2)
