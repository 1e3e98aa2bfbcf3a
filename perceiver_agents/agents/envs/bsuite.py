"""bsuite environments (e.g. catch/0) as agent environments.

A 2-D observation becomes 'spatial' [H, W, 1], a 1-D one 'scalars'; the discrete action
is the action type ('function'), without arguments. With `entities=True` a 2-D board is
given as an entity set instead: one entity per non-zero cell, features
[value, row, column (both scaled to [-1, 1]), Fourier features of (row, column)], padded
to H * W with 'entity_mask'.
"""

import functools
from typing import Mapping

import dm_env
import numpy as np

from perceiver_agents.agents.specs import ActionSpec, EnvSpec


NUM_BANDS = 4  # Fourier bands per board axis for entities=True.


def observation_key(shape: tuple, *, where: str) -> str:
  if len(shape) == 1:
    return 'scalars'
  if len(shape) in (2, 3):
    return 'spatial'
  raise ValueError(f'{where}: observations of rank 1 to 3 are supported, got shape {shape}.')


def to_agent_observation(obs: np.ndarray, key: str) -> dict:
  obs = np.asarray(obs, np.float32)
  if key == 'entities':
    return board_entities(obs)
  if key == 'spatial' and obs.ndim == 2:
    obs = obs[..., None]
  return {key: obs}


@functools.lru_cache(maxsize=16)
def _cell_features(height: int, width: int, num_bands: int) -> np.ndarray:
  """[H * W, 2 + 4K]: every cell's position in [-1, 1] and its Fourier features."""
  rows, cols = np.divmod(np.arange(height * width), width)
  pos = np.stack([2 * rows / max(1, height - 1) - 1,
                  2 * cols / max(1, width - 1) - 1], axis=-1)             # [HW, 2]
  bands = [np.linspace(1.0, size / 2, num_bands) for size in (height, width)]
  angles = np.concatenate([np.pi * pos[:, d:d + 1] * bands[d][None] for d in range(2)],
                          axis=-1)                                        # [HW, 2K]
  features = np.concatenate([pos, np.sin(angles), np.cos(angles)], axis=-1)
  features = features.astype(np.float32)
  features.flags.writeable = False   # Shared by every call (cached).
  return features


def board_entities(board: np.ndarray, *, num_bands: int = NUM_BANDS) -> dict:
  """A 2-D board [H, W] as entities [H * W, F] + entity_mask [H * W] (see module doc)."""
  height, width = board.shape
  cells = np.flatnonzero(board)
  entities = np.zeros([height * width, entity_features(num_bands)], np.float32)
  entities[:len(cells), 0] = board.reshape(-1)[cells]
  entities[:len(cells), 1:] = _cell_features(height, width, num_bands)[cells]
  return {'entities': entities, 'entity_mask': np.arange(height * width) < len(cells)}


def entity_features(num_bands: int = NUM_BANDS) -> int:
  return 3 + 4 * num_bands


class BsuiteEnv(dm_env.Environment):
  """bsuite's environment of `bsuite_id`, with dict observations and actions."""

  def __init__(self, bsuite_id: str = 'catch/0', *, seed: int = 0, entities: bool = False):
    from bsuite import bsuite as bsuite_lib  # pylint: disable=g-import-not-at-top
    from bsuite import sweep  # pylint: disable=g-import-not-at-top
    try:
      # bsuite.load_from_id without its 'Loaded bsuite_id' line on stdout per environment.
      experiment, _ = bsuite_lib.unpack_bsuite_id(bsuite_id)
      self._env = bsuite_lib.load(experiment, sweep.SETTINGS[bsuite_id])
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'env: cannot load bsuite id {bsuite_id!r} ({e}).') from None
    # bsuite seeds from its id; reseed the generator it exposes, where there is one.
    if hasattr(self._env, '_rng'):
      self._env._rng = np.random.RandomState(seed)  # pylint: disable=protected-access
    obs_spec = self._env.observation_spec()
    self._key = observation_key(tuple(obs_spec.shape), where=f'env bsuite:{bsuite_id}')
    shape = tuple(obs_spec.shape) + ((1,) if len(obs_spec.shape) == 2 else ())
    observation = {self._key: (shape, np.float32)}
    if entities:
      if len(obs_spec.shape) != 2:
        raise ValueError(f'env bsuite:{bsuite_id}: entities=True needs a 2-D board, got '
                         f'shape {obs_spec.shape}.')
      cells = int(np.prod(obs_spec.shape))
      self._key = 'entities'
      observation = {'entities': ((cells, entity_features()), np.float32),
                     'entity_mask': ((cells,), np.bool_)}
    self._spec = EnvSpec(observation=observation,
                         action=ActionSpec(num_functions=self._env.action_spec().num_values))

  def env_spec(self) -> EnvSpec:
    return self._spec

  def _convert(self, ts: dm_env.TimeStep) -> dm_env.TimeStep:
    return ts._replace(observation=to_agent_observation(ts.observation, self._key))

  def reset(self) -> dm_env.TimeStep:
    return self._convert(self._env.reset())

  def step(self, action: Mapping[str, int]) -> dm_env.TimeStep:
    return self._convert(self._env.step(int(action['function'])))

  def observation_spec(self):
    return self._env.observation_spec()

  def action_spec(self):
    return self._env.action_spec()
