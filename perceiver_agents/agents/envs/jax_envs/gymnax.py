"""gymnax environments through the pure-JAX protocol (base.py), as one agent (A = 1).

    env = GymnaxEnv('CartPole-v1')        # vector observation -> 'scalars' [1, S]
    env = GymnaxEnv('Breakout-MinAtar')   # [H, W, C] planes  -> 'spatial' [1, H, W, C]
    env = GymnaxEnv('Catch-bsuite')       # [H, W] board      -> 'spatial' [1, H, W, 1]

Only environments with a discrete action space are supported. gymnax's own step resets
at the end of an episode, which is what the protocol asks for.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from perceiver_agents.agents.envs.jax_envs.base import require


class GymnaxEnv:
  """One gymnax environment `env_id` with its default parameters."""

  def __init__(self, env_id: str, **env_kwargs: Any):
    gymnax = require('gymnax')
    if env_id not in gymnax.registered_envs:
      raise ValueError(f'env: unknown gymnax environment {env_id!r}; known: '
                       f'{sorted(gymnax.registered_envs)}.')
    self._env, self._params = gymnax.make(env_id, **env_kwargs)
    space = self._env.action_space(self._params)
    if not hasattr(space, 'n'):
      raise ValueError(f'env: gymnax {env_id!r} has a {type(space).__name__} action '
                       'space; only discrete actions are supported.')
    self.name = env_id
    self.num_agents = 1
    self.num_actions = int(space.n)
    shape = jax.eval_shape(lambda k: self._env.reset(k, self._params)[0],
                           jax.random.PRNGKey(0)).shape
    if len(shape) == 1:
      self._key, obs_shape = 'scalars', (1,) + tuple(shape)
    elif len(shape) in (2, 3):
      self._key = 'spatial'
      obs_shape = (1,) + tuple(shape) + ((1,) if len(shape) == 2 else ())
    else:
      raise ValueError(f'env: gymnax {env_id!r} observations of shape {shape} are '
                       'neither a vector nor planes.')
    self.observation_spec = {
        self._key: (obs_shape, np.float32),
        'action_mask': ((1, self.num_actions), np.bool_),
        'agent_mask': ((1,), np.bool_)}

  def _observation(self, obs: jax.Array) -> dict:
    obs = jnp.asarray(obs, jnp.float32)
    shape = self.observation_spec[self._key][0]
    return {self._key: jnp.reshape(obs, shape),
            'action_mask': jnp.ones((1, self.num_actions), bool),
            'agent_mask': jnp.ones((1,), bool)}

  def reset(self, key: jax.Array):
    obs, state = self._env.reset(key, self._params)
    return self._observation(obs), state

  def step(self, key: jax.Array, state: Any, action: jax.Array):
    """action int32 [1] -> (obs, state, reward f32 [1], done bool [], info {})."""
    obs, state, reward, done, _ = self._env.step(key, state, action[0], self._params)
    reward = jnp.reshape(jnp.asarray(reward, jnp.float32), (1,))
    return self._observation(obs), state, reward, jnp.asarray(done, bool), {}
