"""The ray backend on a local Ray: the inline layout, and a killed actor process replaced."""

import logging
import os
import signal
import time

import jax
import numpy as np

from perceiver_agents.agents.impala import builder


def _layout(batch):
  leaves = jax.tree_util.tree_flatten_with_path(batch)[0]
  return {jax.tree_util.keystr(p): (np.shape(x), np.asarray(x).dtype) for p, x in leaves}


def test_ray_actors_match_inline_and_survive_a_killed_process(local_ray, tiny_config,
                                                              caplog):
  config = tiny_config('actors.backend=ray', 'actors.num_actors=2',
                       'actors.max_restarts=1')
  agent = builder.ImpalaBuilder(config)
  task = agent.task()
  params, _ = task.model.init(jax.random.PRNGKey(0), task.train_batch(0), is_training=True)
  inline = builder.ImpalaBuilder(tiny_config('actors.num_actors=2')).train_iterator(0)
  iterator = agent.train_iterator(0)
  try:
    inline.publish(params, 0)
    iterator.publish(params, 0)
    batch = next(iterator)
    assert _layout(batch) == _layout(next(inline))
    np.testing.assert_array_equal(batch['param_version'], 0)

    pool = iterator._pool  # pylint: disable=protected-access
    os.kill(pool.actor_pids()[0], signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger='perceiver_agents.agents.impala'):
      deadline = time.time() + 60
      step = 0
      while iterator.metrics()['actor_restarts'] < 1 and time.time() < deadline:
        step += 1
        iterator.publish(params, step)
        batch = next(iterator)
    assert 'restarting it with fresh environments' in caplog.text
    iterator.publish(params, step + 1)
    assert len(next(iterator)['param_version']) == 4   # Training goes on.
    assert len(set(pool.actor_pids())) == 2
  finally:
    iterator.close()
    inline.close()
  assert local_ray.is_initialized()  # The test's Ray, left running for other tests.
