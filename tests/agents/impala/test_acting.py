"""The actor: trajectory layout, episode statistics, observation checks."""

import dm_env
import jax
import numpy as np
import pytest

from perceiver_agents.agents.impala import acting
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


def test_get_state_and_set_state_continue_exactly(tiny_agent_config):
  actor, params = _actor(tiny_agent_config)
  actor.unroll(params, 0)
  saved = actor.get_state()
  expected, expected_stats = actor.unroll(params, 1)
  actor.unroll(params, 2)
  actor.set_state(saved)
  actual, actual_stats = actor.unroll(params, 1)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
    np.testing.assert_array_equal(a, b)
  assert expected_stats == actual_stats
