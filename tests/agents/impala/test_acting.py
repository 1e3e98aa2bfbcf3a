"""The actor's trajectory layout, and the V-trace loss at episode boundaries."""

import dm_env
import haiku as hk
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import jax

from perceiver_agents.agents import networks
from perceiver_agents.agents.impala import acting, learning
from perceiver_agents.agents.impala import config as config_lib
from perceiver_agents.agents.impala import networks as impala_networks
from perceiver_agents.agents.specs import ActionSpec, EnvSpec

SPEC = EnvSpec(observation={'scalars': ((2,), np.float32)},
               action=ActionSpec(num_functions=2))


class _Scripted(dm_env.Environment):
  """Episodes of 3 steps; reward = 1 + the step number; alternately terminated and
  truncated; observation = [episode, step]."""

  def __init__(self):
    self.episode, self.t = -1, 0

  def env_spec(self):
    return SPEC

  def _obs(self):
    return {'scalars': np.array([self.episode, self.t], np.float32)}

  def reset(self):
    self.episode, self.t = self.episode + 1, 0
    return dm_env.restart(self._obs())

  def step(self, action):
    assert set(action) == {'function'}
    self.t += 1
    if self.t < 3:
      return dm_env.transition(float(self.t), self._obs())
    end = dm_env.termination if self.episode % 2 == 0 else dm_env.truncation
    return end(float(self.t), self._obs())

  def observation_spec(self):
    return SPEC.observation

  def action_spec(self):
    return SPEC.action


def _actor(tiny_agent_config, unroll_length=4, envs=None):
  nets = impala_networks.make_networks(SPEC, tiny_agent_config)
  actor = acting.Actor(envs=envs or [_Scripted(), _Scripted()], env_spec=SPEC,
                       policy=impala_networks.make_policy(nets, SPEC),
                       core_size=nets.core_size, unroll_length=unroll_length,
                       key=jax.random.PRNGKey(0))
  zeros = acting.zeros_trajectories(SPEC, num=2, unroll_length=unroll_length,
                                    core_size=nets.core_size)
  params, _ = nets.unroll.init(jax.random.PRNGKey(1), zeros, is_training=True)
  return actor, params


def test_trajectories_follow_the_documented_layout(tiny_agent_config):
  actor, params = _actor(tiny_agent_config)
  first, first_stats = actor.unroll(params, 7)
  second, second_stats = actor.unroll(params, 8)
  assert first['observation']['scalars'].shape == (2, 5, 2)
  # Episode 0: steps 0..3 (3 = LAST, terminated), then the reset's FIRST.
  np.testing.assert_array_equal(first['observation']['scalars'][0, :, 1], [0, 1, 2, 3, 0])
  np.testing.assert_array_equal(first['first'][0], [1, 0, 0, 0, 1])
  np.testing.assert_array_equal(first['last'][0], [0, 0, 0, 1, 0])
  np.testing.assert_array_equal(first['reward'][0], [0, 1, 2, 3, 0])
  np.testing.assert_array_equal(first['discount'][0], [1, 1, 1, 0, 1])
  # Trajectories overlap by one step, and the second starts from the core state after
  # step 3 (not from zeros, because the actor carried it on).
  np.testing.assert_array_equal(second['observation']['scalars'][0, 0],
                                first['observation']['scalars'][0, -1])
  assert np.any(second['core_state']['hidden'] != 0)
  np.testing.assert_array_equal(second['discount'][0, :4], [1, 1, 1, 1])  # truncated
  np.testing.assert_array_equal(first['param_version'], [7, 7])
  np.testing.assert_array_equal(second['param_version'], [8, 8])
  # Episode statistics travel beside the trajectories.
  assert first_stats.episode_returns == [6.0, 6.0]
  assert first_stats.episode_lengths == [3, 3]
  assert first_stats.env_steps == 6 and second_stats.env_steps == 6
  assert second_stats.episode_returns == [6.0, 6.0]


def test_the_actor_rejects_observations_that_do_not_match_the_spec(tiny_agent_config):
  class Bad(_Scripted):
    def _obs(self):
      return {'scalars': np.zeros([3], np.float32)}
  with pytest.raises(ValueError, match=r"env 0 observation\['scalars'\]: expected shape"):
    _actor(tiny_agent_config, envs=[Bad()])


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
