"""A fixed latency per environment step, standing in for a costly game engine.

StarCraft II takes tens of milliseconds per step; `StepDelay` gives any environment that
cost (a sleep, which frees the CPU and the GIL, as waiting for a game process does), so
that scaling with actors can be measured on a small machine
(`--config.env_step_delay_ms=20`).
"""

import time
from typing import Any, Mapping

import dm_env


class StepDelay(dm_env.Environment):
  """`env` whose step() (not reset()) takes at least `delay_ms` milliseconds longer."""

  def __init__(self, env: dm_env.Environment, *, delay_ms: float):
    if delay_ms < 0:
      raise ValueError(f'env_step_delay_ms must be >= 0, got {delay_ms}.')
    self._env = env
    self._delay_s = delay_ms / 1000.0

  def env_spec(self):
    return self._env.env_spec()

  def reset(self) -> dm_env.TimeStep:
    return self._env.reset()

  def step(self, action: Mapping[str, int]) -> dm_env.TimeStep:
    time.sleep(self._delay_s)
    return self._env.step(action)

  def observation_spec(self):
    return self._env.observation_spec()

  def action_spec(self):
    return self._env.action_spec()

  def close(self) -> None:
    self._env.close()

  def __getattr__(self, name: str) -> Any:  # e.g. EntityMicroEnv.target
    if name.startswith('__') or name == '_env':
      raise AttributeError(name)
    return getattr(self._env, name)
