"""Environments as dm_env.Environment with the agent's observation/action dicts.

Every adapter has `env_spec() -> EnvSpec` (see agents/specs.py); observations are dicts
of numpy arrays, actions dicts of ints ({'function': ..., <argument>: ...}).

    make('catch')                  bsuite catch/0 (the board as 'spatial' planes)
    make('catch_entities')         bsuite catch/0, the board's non-zero cells as entities
    make('bsuite:cartpole/0')      any bsuite id
    make('gym:CartPole-v1')        a gymnasium id (Box observation, Discrete action)
    make('entity_micro')           the entity-set micro environment (agents/envs/entity_micro.py)
    make('sc2_mock')               pysc2's mock SC2 environment (no game needed)
    make('sc2:MoveToBeacon')       the real game on a map (needs SC2PATH)

`step_delay_ms` > 0 adds that latency to every step (envs/delay.py).
"""

from typing import Any

import dm_env

# Import hooks (standard library only) that make pysc2 4.0.0 importable with current
# protobuf and Python 3.11: installed with this package, so that `from pysc2.lib import
# actions` works after importing it, before any SC2 environment is made.
from perceiver_agents.agents.envs import sc2_compat  # pylint: disable=unused-import

NAMES = ('catch', 'catch_entities', 'bsuite:<id>', 'gym:<id>', 'entity_micro', 'sc2_mock', 'sc2:<map>')


def make(name: str, *, seed: int = 0, step_delay_ms: float = 0,
         **kwargs: Any) -> dm_env.Environment:
  """The environment called `name` (see the module docstring), seeded with `seed`."""
  env = _make(name, seed=seed, **kwargs)
  if step_delay_ms:
    from perceiver_agents.agents.envs import delay  # pylint: disable=g-import-not-at-top
    env = delay.StepDelay(env, delay_ms=step_delay_ms)
  return env


def _make(name: str, *, seed: int, **kwargs: Any) -> dm_env.Environment:
  # pylint: disable=g-import-not-at-top
  if name == 'catch_entities':
    from perceiver_agents.agents.envs import bsuite as bsuite_env
    return bsuite_env.BsuiteEnv('catch/0', seed=seed, entities=True, **kwargs)
  if name == 'catch' or name.startswith('bsuite:'):
    from perceiver_agents.agents.envs import bsuite as bsuite_env
    return bsuite_env.BsuiteEnv(name.partition(':')[2] or 'catch/0', seed=seed, **kwargs)
  if name.startswith('gym:'):
    from perceiver_agents.agents.envs import gymnasium as gym_env
    return gym_env.GymnasiumEnv(name.partition(':')[2], seed=seed, **kwargs)
  if name == 'entity_micro':
    from perceiver_agents.agents.envs import entity_micro
    return entity_micro.EntityMicroEnv(seed=seed, **kwargs)
  if name == 'sc2_mock' or name.startswith('sc2:'):
    from perceiver_agents.agents.envs import pysc2 as sc2_env
    return sc2_env.SC2Env(map_name=name.partition(':')[2] or None,
                          mock=(name == 'sc2_mock'), seed=seed, **kwargs)
  raise ValueError(f'env: unknown environment {name!r}; expected one of {NAMES}.')
