"""Schedules, weight-decay masks, optimizer choice and gradient accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_agents import learner
from perceiver_agents.learner import optim


def test_warmup_then_cosine():
  schedule = optim.make_schedule(learning_rate=1.0, schedule='cosine', warmup_steps=10,
                                 total_steps=110)
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(60),
                              schedule(110)], [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)


def test_warmup_then_linear_decay():
  schedule = optim.make_schedule(learning_rate=2.0, schedule='linear', warmup_steps=10,
                                 total_steps=110, end_learning_rate_factor=0.1)
  np.testing.assert_allclose([schedule(0), schedule(10), schedule(60), schedule(110),
                              schedule(200)], [0.0, 2.0, 1.1, 0.2, 0.2], atol=1e-6)


def test_bad_schedule_names_field():
  with pytest.raises(ValueError, match='optimizer.schedule'):
    optim.make_schedule(learning_rate=1.0, schedule='linear_cosine', warmup_steps=0,
                        total_steps=10)


def test_decay_mask_skips_biases_norms_and_positions():
  params = {
      'linear': {'w': jnp.ones((3, 4)), 'b': jnp.ones(4)},
      'layer_norm': {'scale': jnp.ones(4), 'offset': jnp.ones(4)},
      'trainable_position_encoding': {'pos_embs': jnp.ones((8, 4))},
  }
  assert optim.decay_mask(params) == {
      'linear': {'w': True, 'b': False},
      'layer_norm': {'scale': False, 'offset': False},
      'trainable_position_encoding': {'pos_embs': False},
  }


@pytest.mark.parametrize('name', ['adam', 'adamw', 'lamb'])
def test_optimizers_reduce_a_quadratic(name):
  config = learner.default_config()
  config.optimizer.name = name
  config.optimizer.learning_rate = 0.1
  config.optimizer.warmup_steps = 0
  optimizer, _ = optim.make_optimizer(config, total_steps=100)
  params = {'w': jnp.full((2, 2), 3.0)}
  state = optimizer.init(params)
  loss = lambda p: jnp.sum(p['w'] ** 2)
  for _ in range(20):
    updates, state = optimizer.update(jax.grad(loss)(params), state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
  assert loss(params) < 36.0 / 2


def test_unknown_optimizer_names_field():
  config = learner.default_config()
  config.optimizer.name = 'sgdd'
  with pytest.raises(ValueError, match='optimizer.name'):
    optim.make_optimizer(config, total_steps=10)


def test_accumulating_two_halves_equals_one_full_batch():
  def make(accumulate):
    config = learner.default_config()
    config.optimizer.accumulate_steps = accumulate
    config.optimizer.warmup_steps = 0
    return optim.make_optimizer(config, total_steps=10 * accumulate)[0]

  x = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
  loss = lambda p, xs: jnp.mean((xs @ p['w']) ** 2)
  params = {'w': jnp.ones((3, 2))}

  full = make(1)
  updates, _ = full.update(jax.grad(loss)(params, x), full.init(params), params)
  expected = jax.tree.map(lambda p, u: p + u, params, updates)

  accumulated = make(2)
  state, current = accumulated.init(params), params
  for half in (x[:4], x[4:]):
    updates, state = accumulated.update(jax.grad(loss)(current, half), state, current)
    current = jax.tree.map(lambda p, u: p + u, current, updates)
  np.testing.assert_allclose(current['w'], expected['w'], atol=1e-6)
  assert not np.allclose(current['w'], params['w'])
