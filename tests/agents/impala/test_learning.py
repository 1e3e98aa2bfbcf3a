"""The V-trace loss: episode boundaries, importance weights, shape checks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_agents.agents import networks
from perceiver_agents.agents.impala import config as config_lib
from perceiver_agents.agents.impala import learning
from perceiver_agents.agents.specs import ActionSpec, EnvSpec

SPEC = EnvSpec(observation={'scalars': ((2,), np.float32)},
               action=ActionSpec(num_functions=2))


def _loss(values, reward, discount, last, gamma=0.5):
  config = config_lib.loss_config()
  config.discount = gamma
  config.entropy_cost = 0.0
  k = len(values)
  outputs = networks.AgentOutput(
      logits={'function': jnp.zeros([1, k, 2])}, value=jnp.asarray([values], jnp.float32),
      action={'function': jnp.zeros([1, k], jnp.int32)})
  batch = {'first': jnp.zeros([1, k], bool), 'last': jnp.asarray([last], bool),
           'reward': jnp.asarray([reward], jnp.float32),
           'discount': jnp.asarray([discount], jnp.float32),
           'behaviour_logprob': jnp.full([1, k], np.log(0.5), jnp.float32)}
  return learning.impala_loss(SPEC, config)(outputs, batch)


def test_termination_does_not_bootstrap_but_truncation_does():
  # Steps: 0 -> 1 (LAST). On-policy (rho = 1), so the V-trace target of step 0 is
  # r + gamma * discount * V(1); step 1 -> 2 crosses the reset and is masked.
  values = [0.0, 4.0, 100.0]
  _, terminated = _loss(values, [0, 1, 0], [1, 0, 1], [0, 1, 0])
  _, truncated = _loss(values, [0, 1, 0], [1, 1, 1], [0, 1, 0])
  np.testing.assert_allclose(terminated['baseline_loss'], 0.5 * 1.0 ** 2, rtol=1e-5)
  np.testing.assert_allclose(truncated['baseline_loss'], 0.5 * (1 + 0.5 * 4) ** 2,
                             rtol=1e-5)


def test_the_transition_across_a_reset_is_masked():
  base, _ = _loss([0.0, 4.0, 1.0], [0, 1, 5], [1, 0, 1], [0, 1, 0])
  changed, _ = _loss([0.0, 4.0, -50.0], [0, 1, 99], [1, 0, 1], [0, 1, 0])
  np.testing.assert_allclose(base, changed, rtol=1e-6)


def _arrays(b=2, t=5, seed=0):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(rng.normal(size=[b, t, 3]), jnp.float32)
  actions = jnp.asarray(rng.integers(0, 3, size=[b, t]), jnp.int32)
  return logits, actions, dict(
      values=jnp.asarray(rng.normal(size=[b, t + 1]), jnp.float32),
      rewards=jnp.asarray(rng.normal(size=[b, t]), jnp.float32),
      discounts=jnp.full([b, t], 0.9, jnp.float32), mask=jnp.ones([b, t], bool))


@pytest.mark.parametrize('jit', [True, False])
def test_on_policy_rho_is_one_and_a_lagging_behaviour_policy_changes_it(jit):
  logits, actions, rest = _arrays()
  logp, ent = learning.categorical_logprob_and_entropy(logits, actions)

  def run(behaviour_logp):
    return learning.vtrace_loss(target_logprob=logp, behaviour_logprob=behaviour_logp,
                                entropy=ent, **rest)
  run = jax.jit(run) if jit else run

  on_losses, on = run(logp)
  np.testing.assert_allclose(on['rho_mean'], 1.0, rtol=1e-6)
  np.testing.assert_allclose(on['rho_max'], 1.0, rtol=1e-6)
  np.testing.assert_array_equal(on['rho_clipped_fraction'], 0.0)
  # Acted by older parameters (other logits): rho moves away from 1 both ways, some
  # weights get clipped, and the loss changes.
  old_logp, _ = learning.categorical_logprob_and_entropy(logits * 0.5 + 0.3, actions)
  off_losses, off = run(old_logp)
  assert np.all(off['rho_max'] > 1.0) and np.all(off['rho_min'] < 1.0)
  assert np.all(off['rho_clipped_fraction'] > 0.0)
  assert not np.allclose(off_losses, on_losses)
  chex.assert_shape([on_losses, off['rho_mean']], [(2,), (2,)])


def test_vtrace_loss_names_the_mismatched_argument():
  logits, actions, rest = _arrays()
  logp, ent = learning.categorical_logprob_and_entropy(logits, actions)
  rest['values'] = rest['values'][:, :-1]
  with pytest.raises(ValueError, match=r'values: expected shape \[B, T \+ 1\] = \[2, 6\]'):
    learning.vtrace_loss(target_logprob=logp, behaviour_logprob=logp, entropy=ent, **rest)


def test_categorical_logprob_and_entropy():
  logits = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
  logp, ent = learning.categorical_logprob_and_entropy(logits, jnp.array([1]))
  np.testing.assert_allclose(logp, np.log([0.25]), rtol=1e-6)
  np.testing.assert_allclose(ent, [-(0.5 * np.log(0.5) + 0.5 * np.log(0.25))], rtol=1e-6)
