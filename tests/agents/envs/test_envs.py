"""Environment adapters: entity_micro, bsuite, gymnasium, and pysc2's mock environment."""

import subprocess
import sys

import dm_env
import numpy as np
import pytest

from perceiver_agents.agents import envs
from perceiver_agents.agents.envs import entity_micro


def test_entity_micro_rewards_the_enemy_nearest_the_weakest_own_unit():
  env = entity_micro.EntityMicroEnv(seed=3, episode_length=50)
  ts = env.reset()
  spec = env.env_spec()
  for _ in range(20):
    spec.check_observation(ts.observation)
    ents, mask = ts.observation['entities'], ts.observation['entity_mask']
    own = np.flatnonzero(mask & (ents[:, 3] == 1))
    enemy = np.flatnonzero(mask & (ents[:, 4] == 1))
    weakest = own[np.argmin(ents[own, 2])]
    nearest = enemy[np.argmin(np.linalg.norm(ents[enemy, :2] - ents[weakest, :2], axis=1))]
    assert env.target == nearest
    assert not np.any(ents[~mask])  # padding is zero
    wrong = enemy[enemy != nearest][:1]
    if len(wrong):
      assert env.step({'function': 1, 'target': int(wrong[0])}).reward == 0.0
      ts = dm_env.restart(env._obs)  # pylint: disable=protected-access
    target = env.target
    ts = env.step({'function': 1, 'target': target})
    assert ts.reward == 1.0


def test_entity_micro_zero_enemies_makes_attack_unavailable():
  env = entity_micro.EntityMicroEnv(seed=0, min_enemies=0, max_enemies=1)
  for _ in range(30):
    ts = env.reset()
    if not ts.observation['action_mask'][1]:
      break
  assert env.target == -1
  with pytest.raises(ValueError, match='attack is unavailable'):
    env.step({'function': 1, 'target': 0})
  assert env.step({'function': 0, 'target': 0}).reward == 0.0


def test_entity_micro_truncates_episodes_with_discount_one():
  env = entity_micro.EntityMicroEnv(episode_length=2)
  env.reset()
  assert env.step({'function': 0, 'target': 0}).mid()
  ts = env.step({'function': 0, 'target': 0})
  assert ts.last() and ts.discount == 1.0


@pytest.mark.parametrize('min_enemies', [0, 1])
def test_entity_micro_random_enemy_return_matches_playing_it(min_enemies):
  env = entity_micro.EntityMicroEnv(seed=5, max_enemies=3, min_enemies=min_enemies,
                                    episode_length=4)
  rng = np.random.default_rng(0)
  returns = []
  for _ in range(1500):
    ts, total = env.reset(), 0.0
    while not ts.last():
      obs = ts.observation
      enemies = np.flatnonzero(obs['entity_mask'] & (obs['entities'][:, 4] == 1))
      action = ({'function': 1, 'target': int(rng.choice(enemies))} if len(enemies)
                else {'function': 0, 'target': 0})
      ts = env.step(action)
      total += ts.reward
    returns.append(total)
  expected = 4 * np.mean([1 / k if k else 0 for k in range(min_enemies, 4)])
  assert env.random_enemy_return() == pytest.approx(expected)
  assert np.mean(returns) == pytest.approx(expected, abs=0.08)


def test_bsuite_catch_adapter(capsys):
  env = envs.make('catch', seed=1)
  assert capsys.readouterr().out == ''  # No 'Loaded bsuite_id' line per environment.
  spec = env.env_spec()
  assert spec.observation == {'spatial': ((10, 5, 1), np.float32)}
  ts = env.reset()
  spec.check_observation(ts.observation)
  while not ts.last():
    ts = env.step({'function': 1})
  assert ts.reward in (-1.0, 1.0) and ts.discount == 0.0


def test_catch_as_entities_lists_the_non_zero_cells():
  env = envs.make('catch_entities', seed=1)
  ts = env.reset()
  env.env_spec().check_observation(ts.observation)
  ents, mask = ts.observation['entities'], ts.observation['entity_mask']
  assert mask.sum() == 2  # the ball and the paddle
  np.testing.assert_array_equal(ents[:2, 0], 1.0)
  assert ents[1, 1] == 1.0  # the paddle is on the last row (row coordinate +1)
  assert not np.any(ents[~mask])


def test_gymnasium_adapter_reports_truncation():
  env = envs.make('gym:CartPole-v1', seed=0, max_episode_steps=3)
  assert env.env_spec().observation == {'scalars': ((4,), np.float32)}
  ts = env.reset()
  for _ in range(3):
    ts = env.step({'function': int(ts.observation['scalars'][2] > 0)})
  assert ts.last() and ts.discount == 1.0
  assert env.step({'function': 0}).first()


def test_unknown_environments_are_clear():
  with pytest.raises(ValueError, match="env: unknown environment 'chess'"):
    envs.make('chess')
  with pytest.raises(ValueError, match='gymnasium'):
    envs.make('gym:NoSuchEnv-v9')


def test_real_sc2_needs_sc2path(monkeypatch):
  monkeypatch.delenv('SC2PATH', raising=False)
  with pytest.raises(ValueError, match='SC2PATH is not set'):
    envs.make('sc2:MoveToBeacon')


def test_pysc2_mock_env_full_action_space():
  from pysc2.lib import actions  # pylint: disable=import-outside-toplevel
  env = envs.make('sc2_mock')
  spec = env.env_spec()
  kinds = {a.name: a.kind for a in spec.action.args}
  assert spec.action.num_functions == len(actions.FUNCTIONS)
  assert kinds['screen'] == 'point' and kinds['select_unit_id'] == 'pointer'
  assert kinds['queued'] == 'categorical'
  ts = env.reset()
  spec.check_observation(ts.observation)
  assert ts.observation['entity_mask'].sum() == 1  # The mock's one unit.
  smart = env.function_ids.index(actions.FUNCTIONS.Smart_screen.id)
  call = env.function_call({'function': smart, 'queued': 1, 'screen': 2 * 16 + 5})
  assert call.function == actions.FUNCTIONS.Smart_screen.id
  assert [list(a) for a in call.arguments] == [[1], [5, 2]]
  attack = env.function_ids.index(actions.FUNCTIONS.Attack_screen.id)
  with pytest.raises(ValueError, match='Attack_screen .* is not available'):
    env.step({'function': attack, 'queued': 0, 'screen': 0})
  steps = 0
  while not ts.last():
    ts = env.step({'function': smart, 'queued': 0, 'screen': 3})
    steps += 1
  assert steps == 10 and ts.discount == 0.0


def test_pysc2_imports_after_tensorflow_without_patching():
  # A fresh interpreter: protobuf's C backend (as TensorFlow loads it) is active, and
  # pysc2's old generated code and Python 3.11 incompatibility are handled by sc2_compat.
  code = ('import google.protobuf, tensorflow as tf\n'
          'from google.protobuf.internal import api_implementation as a\n'
          'from perceiver_agents.agents.envs import pysc2 as p\n'
          'from s2clientprotocol import sc2api_pb2\n'
          'from pysc2.lib import colors\n'
          'assert colors.shuffled_hue(8).shape == (8, 3)\n'
          'r = sc2api_pb2.RequestAction(); r.ParseFromString(r.SerializeToString())\n'
          'print(a.Type(), tf.__version__)\n')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split()[0] == 'upb'


def test_step_delay_adds_latency_to_steps_and_keeps_the_environment(monkeypatch):
  slept = []
  monkeypatch.setattr('time.sleep', slept.append)
  env = envs.make('entity_micro', seed=3, step_delay_ms=20)
  plain = envs.make('entity_micro', seed=3)
  first, reference = env.reset(), plain.reset()
  np.testing.assert_array_equal(first.observation['entities'],
                                reference.observation['entities'])
  assert slept == []  # reset() is not delayed.
  action = {'function': entity_micro.ATTACK, 'target': env.target}
  assert env.step(action).reward == plain.step(action).reward == 1.0
  assert slept == [0.02]
  assert env.env_spec().observation == plain.env_spec().observation
  with pytest.raises(ValueError, match='env_step_delay_ms must be >= 0, got -1'):
    envs.make('entity_micro', step_delay_ms=-1)
