"""StarCraft II through pysc2 as an agent environment: entities, planes, the full action space.

Observation (pysc2 feature-layer interface, `use_feature_units`, or raw units):
  entities     f32 [N, 46]   feature_units (or raw_units) rows, log1p-scaled, N = max_units
  entity_mask  bool [N]
  spatial      f32 [S, S, 27 + 11]  feature_screen and feature_minimap planes (log1p), on
                                    one S x S grid (screen_size == minimap_size)
  scalars      f32 [11]      player statistics (log1p)
  action_mask  bool [A]      pysc2's available_actions over the exposed functions
Action: {'function': index into `function_ids`, then one entry per pysc2 argument type}:
  screen, minimap, screen2          'point'       flat index y * S + x
  select_unit_id, unload_id         'pointer'     an entity index (passed to pysc2 as is:
                                                  pysc2 reads it as the index into the
                                                  selection / cargo list)
  queued, select_add, ... (others)  'categorical' pysc2's own sizes
Function f uses exactly the arguments pysc2 lists for it.

`mock=True` runs pysc2's own mock environment (pysc2.env.mock_sc2_env.SC2TestEnv: real
observation and action specs, no game binary). Otherwise the real game is started, which
needs StarCraft II installed and SC2PATH set (see the README).

Importing this module installs perceiver_agents.agents.envs.sc2_compat first, which makes
pysc2 4.0.0 work on Python 3.11 with current protobuf.
"""

import os
from typing import Mapping, Optional, Sequence

import dm_env
import numpy as np

from perceiver_agents.agents.envs import sc2_compat  # pylint: disable=unused-import
from perceiver_agents.agents.specs import ActionSpec, ArgSpec, EnvSpec

os.environ.setdefault('PYGAME_HIDE_SUPPORT_PROMPT', '1')

# pylint: disable=g-import-not-at-top,wrong-import-position
from pysc2.env import environment as sc2_environment
from pysc2.env import mock_sc2_env
from pysc2.env import sc2_env
from pysc2.lib import actions as sc2_actions
from pysc2.lib import features as sc2_features

POINT_ARGS = ('screen', 'minimap', 'screen2')
POINTER_ARGS = ('select_unit_id', 'unload_id')
UNIT_FEATURES = len(sc2_features.FeatureUnit)
PLAYER_FEATURES = len(sc2_features.Player)


def _scale(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return np.sign(x) * np.log1p(np.abs(x))


class SC2Env(dm_env.Environment):
  """pysc2's SC2Env (or its mock) with the agent's dict observations and actions.

  Args:
    map_name: the map (real game only), e.g. 'MoveToBeacon'.
    mock: use pysc2's mock environment instead of the game.
    seed: the game's random seed.
    screen_size: S, the screen and minimap resolution.
    max_units: N, entities kept (further units are dropped, in pysc2's order).
    units: 'feature_units' or 'raw_units'.
    function_ids: the pysc2 function ids the agent may use (default: all of them).
    step_mul: game steps per agent step.
  """

  def __init__(self, *, map_name: Optional[str] = None, mock: bool = False, seed: int = 0,
               screen_size: int = 16, max_units: int = 32, units: str = 'feature_units',
               function_ids: Optional[Sequence[int]] = None, step_mul: int = 8):
    if units not in ('feature_units', 'raw_units'):
      raise ValueError(f"units must be 'feature_units' or 'raw_units', got {units!r}.")
    if not mock and not map_name:
      raise ValueError("map_name: the real game needs a map, e.g. 'sc2:MoveToBeacon'.")
    if not mock and not os.environ.get('SC2PATH'):
      raise ValueError('SC2PATH is not set: install StarCraft II and set SC2PATH to it '
                       "(see the README), or use the mock environment ('sc2_mock').")
    self._units = units
    self._max_units = max_units
    self._size = screen_size
    interface = sc2_env.AgentInterfaceFormat(
        feature_dimensions=sc2_env.Dimensions(screen=screen_size, minimap=screen_size),
        use_feature_units=True, use_raw_units=True,
        action_space=sc2_actions.ActionSpace.FEATURES)
    kwargs = dict(map_name=map_name, players=[sc2_env.Agent(sc2_env.Race.terran)],
                  agent_interface_format=interface, step_mul=step_mul, random_seed=seed)
    if mock:
      self._env = mock_sc2_env.SC2TestEnv(**kwargs)
    else:  # pragma: no cover - needs the game.
      kwargs['players'].append(sc2_env.Bot(sc2_env.Race.random, sc2_env.Difficulty.easy))
      if map_name in ('MoveToBeacon', 'CollectMineralShards', 'FindAndDefeatZerglings',
                      'DefeatRoaches', 'DefeatZerglingsAndBanelings', 'CollectMineralsAndGas',
                      'BuildMarines'):
        kwargs['players'] = kwargs['players'][:1]  # Mini-games are single-player.
      self._env = sc2_env.SC2Env(**kwargs)
    self._functions = self._env.action_spec()[0].functions
    ids = list(range(len(self._functions))) if function_ids is None else list(function_ids)
    unknown = [i for i in ids if not 0 <= i < len(self._functions)]
    if unknown or not ids:
      raise ValueError(f'function_ids: must be pysc2 function ids in [0, '
                       f'{len(self._functions)}), got {unknown or ids}.')
    self._function_ids = ids
    self._index_of = {fid: i for i, fid in enumerate(ids)}
    self._spec = self._make_spec()

  def _make_spec(self) -> EnvSpec:
    types = self._env.action_spec()[0].types
    used = sorted({arg.id for fid in self._function_ids for arg in self._functions[fid].args})
    arg_specs = []
    for type_id in used:
      arg = types[type_id]
      if arg.name in POINT_ARGS:
        if tuple(arg.sizes) != (self._size, self._size):
          raise ValueError(f'argument {arg.name}: sizes {arg.sizes} differ from the '
                           f'{self._size} x {self._size} planes.')
        arg_specs.append(ArgSpec(arg.name, 'point'))
      elif arg.name in POINTER_ARGS:
        arg_specs.append(ArgSpec(arg.name, 'pointer'))
      else:
        arg_specs.append(ArgSpec(arg.name, 'categorical', int(arg.sizes[0])))
    names = [a.name for a in arg_specs]
    usage = np.zeros([len(self._function_ids), len(arg_specs)], bool)
    for i, fid in enumerate(self._function_ids):
      for arg in self._functions[fid].args:
        usage[i, names.index(arg.name)] = True
    obs_spec = self._env.observation_spec()[0]
    planes = obs_spec['feature_screen'][0] + obs_spec['feature_minimap'][0]
    return EnvSpec(
        observation={
            'entities': ((self._max_units, UNIT_FEATURES), np.float32),
            'entity_mask': ((self._max_units,), np.bool_),
            'spatial': ((self._size, self._size, planes), np.float32),
            'scalars': ((PLAYER_FEATURES,), np.float32),
            'action_mask': ((len(self._function_ids),), np.bool_)},
        action=ActionSpec(num_functions=len(self._function_ids), args=tuple(arg_specs),
                          usage=usage,
                          function_names=[self._functions[f].name for f in self._function_ids]))

  def env_spec(self) -> EnvSpec:
    return self._spec

  @property
  def function_ids(self) -> list:
    return list(self._function_ids)

  @property
  def pysc2_env(self):
    """The wrapped pysc2 environment (SC2Env or SC2TestEnv)."""
    return self._env

  def _observation(self, obs: Mapping[str, np.ndarray]) -> dict:
    units = np.asarray(obs[self._units]).reshape(-1, UNIT_FEATURES)[:self._max_units]
    entities = np.zeros([self._max_units, UNIT_FEATURES], np.float32)
    entities[:len(units)] = _scale(units)
    screen = np.asarray(obs['feature_screen'])
    minimap = np.asarray(obs['feature_minimap'])
    if screen.shape[1:] != minimap.shape[1:]:
      raise ValueError(f'feature_screen {screen.shape} and feature_minimap '
                       f'{minimap.shape} must share a resolution.')
    spatial = _scale(np.concatenate([screen, minimap], axis=0).transpose(1, 2, 0))
    available = set(int(a) for a in np.asarray(obs['available_actions']).ravel())
    return {'entities': entities,
            'entity_mask': np.arange(self._max_units) < len(units),
            'spatial': spatial,
            'scalars': _scale(obs['player']),
            'action_mask': np.array([fid in available for fid in self._function_ids])}

  def _convert(self, ts) -> dm_env.TimeStep:
    return dm_env.TimeStep(
        step_type=dm_env.StepType(int(ts.step_type)), reward=float(ts.reward or 0.0),
        discount=float(ts.discount if ts.discount is not None else 1.0),
        observation=self._observation(ts.observation))
  # pysc2 ends an episode with discount 0 (and SC2Env's step_mul time limit likewise).

  def reset(self) -> dm_env.TimeStep:
    self._last_obs = self._env.reset()[0]
    return self._convert(self._last_obs)

  def function_call(self, action: Mapping[str, int]) -> sc2_actions.FunctionCall:
    """The pysc2 FunctionCall of an agent action (validated against availability)."""
    index = int(action['function'])
    if not 0 <= index < len(self._function_ids):
      raise ValueError(f"action['function']: expected an index in [0, "
                       f'{len(self._function_ids)}), got {index}.')
    fid = self._function_ids[index]
    available = np.asarray(self._last_obs.observation['available_actions']).ravel()
    if fid not in available:
      name = self._functions[fid].name
      raise ValueError(f"action['function']: {name} (pysc2 id {fid}) is not available; "
                       f'available ids: {sorted(int(a) for a in available)}.')
    args = []
    for arg in self._functions[fid].args:
      if arg.name not in action:
        raise ValueError(f'action: {self._functions[fid].name} needs argument '
                         f'{arg.name!r}.')
      value = int(action[arg.name])
      if arg.name in POINT_ARGS:
        args.append([value % self._size, value // self._size])  # pysc2 points are (x, y)
      else:
        args.append([value])
    return sc2_actions.FunctionCall(fid, args)

  def step(self, action: Mapping[str, int]) -> dm_env.TimeStep:
    if self._last_obs.step_type == sc2_environment.StepType.LAST:
      return self.reset()
    self._last_obs = self._env.step([self.function_call(action)])[0]
    return self._convert(self._last_obs)

  def close(self):
    self._env.close()

  def observation_spec(self):
    return self._spec.observation

  def action_spec(self):
    return self._spec.action
