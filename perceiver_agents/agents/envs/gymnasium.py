"""gymnasium environments (Box observations, Discrete actions) as dm_env environments.

`terminated` ends an episode with discount 0; `truncated` (a time limit) ends it with
discount 1, so the learner bootstraps from the last observation's value.
"""

from typing import Mapping

import dm_env
import numpy as np

from perceiver_agents.agents.envs.bsuite import observation_key, to_agent_observation
from perceiver_agents.agents.specs import ActionSpec, EnvSpec


class GymnasiumEnv(dm_env.Environment):
  """gymnasium.make(env_id) as a dm_env.Environment with dict observations/actions."""

  def __init__(self, env_id: str, *, seed: int = 0, **make_kwargs):
    import gymnasium  # pylint: disable=g-import-not-at-top
    try:
      self._env = gymnasium.make(env_id, **make_kwargs)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'env: cannot make gymnasium env {env_id!r} ({e}).') from None
    space, actions = self._env.observation_space, self._env.action_space
    if not isinstance(space, gymnasium.spaces.Box):
      raise ValueError(f'env gym:{env_id}: needs a Box observation space, got {space}.')
    if not isinstance(actions, gymnasium.spaces.Discrete):
      raise ValueError(f'env gym:{env_id}: needs a Discrete action space, got {actions}.')
    self._key = observation_key(space.shape, where=f'env gym:{env_id}')
    shape = tuple(space.shape) + ((1,) if len(space.shape) == 2 else ())
    self._spec = EnvSpec(observation={self._key: (shape, np.float32)},
                         action=ActionSpec(num_functions=int(actions.n)))
    self._seed = seed
    self._needs_reset = True

  def env_spec(self) -> EnvSpec:
    return self._spec

  def reset(self) -> dm_env.TimeStep:
    obs, _ = self._env.reset(seed=self._seed)
    self._seed = None  # Seed the first episode only; later ones continue the stream.
    self._needs_reset = False
    return dm_env.restart(to_agent_observation(obs, self._key))

  def step(self, action: Mapping[str, int]) -> dm_env.TimeStep:
    if self._needs_reset:
      return self.reset()
    obs, reward, terminated, truncated, _ = self._env.step(int(action['function']))
    obs = to_agent_observation(obs, self._key)
    if terminated:
      self._needs_reset = True
      return dm_env.termination(float(reward), obs)
    if truncated:
      self._needs_reset = True
      return dm_env.truncation(float(reward), obs)
    return dm_env.transition(float(reward), obs)

  def observation_spec(self):
    return self._spec.observation

  def action_spec(self):
    return self._spec.action
