"""GAE and the V-trace loss against direct numpy computations."""

import jax.numpy as jnp
import numpy as np

from perceiver_agents.agents.anakin import losses


def _traj(rng, t=6, e=2, a=3, k=4):
  done = rng.random((t, e)) < 0.3
  return losses.Trajectory(
      obs={}, action=rng.integers(0, k, (t, e, a)).astype(np.int32),
      logp=np.zeros((t, e, a), np.float32), value=rng.normal(size=(t, e, a)).astype(np.float32),
      reward=rng.normal(size=(t, e, a)).astype(np.float32), done=done,
      agent_mask=np.ones((t, e, a), bool))


def _returns(traj, last_value, gamma):
  """Discounted returns bootstrapped from last_value, cut at episode ends."""
  g = np.asarray(last_value, np.float64)
  out = np.zeros(traj.reward.shape)
  for t in reversed(range(traj.reward.shape[0])):
    g = traj.reward[t] + gamma * (1 - traj.done[t][..., None]) * g
    out[t] = g
  return out


def test_gae_with_lambda_one_is_the_discounted_return_minus_the_value():
  rng = np.random.default_rng(0)
  traj = _traj(rng)
  last = rng.normal(size=(2, 3)).astype(np.float32)
  advantages, targets = losses.gae(traj, jnp.asarray(last), gamma=0.9, lam=1.0)
  expected = _returns(traj, last, 0.9)
  np.testing.assert_allclose(targets, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(advantages, expected - traj.value, rtol=1e-5, atol=1e-5)


def test_gae_with_lambda_zero_is_the_one_step_td_error():
  rng = np.random.default_rng(1)
  traj = _traj(rng)
  last = rng.normal(size=(2, 3)).astype(np.float32)
  advantages, _ = losses.gae(traj, jnp.asarray(last), gamma=0.9, lam=0.0)
  next_value = np.concatenate([traj.value[1:], last[None]])
  td = traj.reward + 0.9 * (1 - traj.done[..., None]) * next_value - traj.value
  np.testing.assert_allclose(advantages, td, rtol=1e-5, atol=1e-5)


def test_on_policy_vtrace_value_loss_is_the_squared_return_error():
  rng = np.random.default_rng(2)
  traj = _traj(rng)
  logits = jnp.asarray(rng.normal(size=traj.action.shape + (4,)), jnp.float32)
  logp = np.take_along_axis(np.asarray(jax_log_softmax(logits)), traj.action[..., None],
                            -1)[..., 0]
  traj = traj._replace(logp=logp)   # Acting policy = learner policy: rho = 1.
  last = rng.normal(size=(2, 3)).astype(np.float32)
  config = losses.loss_config()
  config.gae_lambda, config.gamma = 1.0, 0.9
  _, metrics = losses.vtrace_loss(logits, jnp.asarray(traj.value), jnp.asarray(last),
                                  traj, config)
  expected = 0.5 * np.mean((_returns(traj, last, 0.9) - traj.value) ** 2)
  np.testing.assert_allclose(metrics['value_loss'], expected, rtol=1e-4)


def jax_log_softmax(x):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.nn.log_softmax(x)
