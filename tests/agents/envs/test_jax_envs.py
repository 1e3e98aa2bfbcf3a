"""Pure-JAX environment adapters against jaxmarl's SMAX and gymnax on fixed keys."""

import sys

import chex
import gymnax
import jax
import jax.numpy as jnp
import jaxmarl
import numpy as np
import pytest

from perceiver_agents.agents.envs import jax_envs
from perceiver_agents.agents.envs.jax_envs import base, smax
from perceiver_agents.agents.envs.jax_envs import gymnax as gymnax_env


def test_unknown_names_list_the_known_ones():
  with pytest.raises(ValueError, match=r"smax:<map>.*gymnax:<id>"):
    jax_envs.make('atari:Pong')
  with pytest.raises(ValueError, match=r"unknown SMAX map '4x'.*'2s3z'.*'3m'.*'5m_vs_6m'"):
    jax_envs.make('smax:4x')
  with pytest.raises(ValueError, match=r"unknown gymnax environment 'Cartpole'.*'CartPole-v1'"):
    jax_envs.make('gymnax:Cartpole')
  with pytest.raises(ValueError, match='only discrete actions'):
    jax_envs.make('gymnax:Pendulum-v1')


def test_missing_extra_names_it(monkeypatch):
  monkeypatch.setitem(sys.modules, 'jaxmarl', None)
  with pytest.raises(ImportError, match=r"perceiver-agents\[jaxenv\]"):
    smax.SMAXEnv('3m')


def test_custom_unit_mix_builds_that_scenario():
  env = smax.SMAXEnv('3m2M_vs_6m')
  assert (env.allies, env.enemies, env.num_actions) == (5, 6, 11)
  obs, _ = jax.jit(env.reset)(jax.random.PRNGKey(0))
  types = np.argmax(np.asarray(obs['units'][:, 7:13]), axis=1)
  np.testing.assert_array_equal(types, [0, 0, 0, 1, 1] + [0] * 6)
  assert smax.SMAXEnv('2s2Z').enemies == 4


def test_smax_matches_jaxmarl_on_fixed_keys():
  env = smax.SMAXEnv('3m')
  raw = jaxmarl.make('HeuristicEnemySMAX', scenario=smax.scenario('3m'),
                     **smax.BASELINE_KWARGS)

  @jax.jit
  def both_steps(key, state, action):  # One program: XLA shares the common work.
    ours = env.step(key, state, action)
    theirs = raw.step(key, state, {n: action[i] for i, n in enumerate(raw.agents)})
    return ours, theirs, raw.get_avail_actions(theirs[1])

  obs, state = jax.jit(env.reset)(jax.random.PRNGKey(3))
  raw_obs, raw_state = jax.jit(raw.reset)(jax.random.PRNGKey(3))
  chex.assert_trees_all_equal(state, raw_state)
  avail = jax.jit(raw.get_avail_actions)(raw_state)
  rng = np.random.default_rng(0)
  a, k = env.allies, env.enemies
  for t in range(6):
    np.testing.assert_array_equal(
        obs['action_mask'], np.stack([avail[n] for n in raw.agents]).astype(bool))
    for i, name in enumerate(raw.agents):
      vec = np.asarray(raw_obs[name])
      ents = np.asarray(obs['entities'][i])
      np.testing.assert_allclose(ents[1:, :13], vec[:-10].reshape(a + k - 1, 13),
                                 err_msg=f'step {t} ally {i}')
      np.testing.assert_allclose(ents[0, [0, 6]], vec[-10:][[0, 3]])     # health, cooldown
      np.testing.assert_allclose(ents[0, 7:13], vec[-6:])                # unit type
      np.testing.assert_allclose(ents[0, 16:], vec[-9:-7])               # position
      np.testing.assert_array_equal(obs['entity_mask'][i], ents[:, 0] > 0)
      np.testing.assert_array_equal(ents[a:, 14], 1.0)                   # enemies
    mask = np.asarray(obs['action_mask'])
    action = np.array([rng.choice(np.flatnonzero(m)) for m in mask], np.int32)
    (obs, state, reward, done, info), theirs, avail = both_steps(
        jax.random.PRNGKey(100 + t), state, jnp.asarray(action))
    raw_obs, raw_state, raw_reward, raw_done, _ = theirs
    chex.assert_trees_all_equal(state, raw_state)
    np.testing.assert_allclose(reward, [raw_reward[n] for n in raw.agents])
    assert bool(done) == bool(raw_done['__all__'])
    assert float(info['won']) == float(bool(done) and raw_reward[raw.agents[0]] >= 1.0)


def test_padding_masks_absent_units_and_padding_allies_can_only_stop():
  env = smax.SMAXEnv('3m', max_allies=5, max_enemies=6)
  assert (env.num_agents, env.num_actions, env.num_units) == (5, 11, 11)
  obs, _ = jax.jit(env.reset)(jax.random.PRNGKey(0))
  np.testing.assert_array_equal(obs['agent_mask'], [1, 1, 1, 0, 0])
  pad_mask = np.asarray(obs['action_mask'][3:])
  assert pad_mask[:, smax.STOP].all() and pad_mask.sum() == 2
  assert not np.asarray(obs['action_mask'][:3, 5 + 3:]).any()        # enemies 3..5
  assert not np.asarray(obs['entity_mask'][:, 3:5]).any()            # padding ally slots
  assert not np.asarray(obs['entity_mask'][:, 5 + 3:]).any()
  np.testing.assert_array_equal(obs['unit_mask'], [1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0])
  assert not np.asarray(obs['entities'][3:]).any()


def test_mixture_shares_padded_shapes():
  env = jax_envs.make('smax:3m+5m_vs_6m')
  assert (env.num_agents, env.num_actions) == (5, 11)
  reset, step = base.batched(env)
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  obs, states = jax.eval_shape(reset, keys)
  for key, (shape, dtype) in env.observation_spec.items():
    assert obs[key].shape == (4,) + shape and obs[key].dtype == dtype, key
  out = jax.eval_shape(step, keys, states, jnp.zeros((4, 5), jnp.int32))
  chex.assert_shape([out[2], out[3], out[4]['won']], [(4, 5), (4,), (4,)])
  np.testing.assert_array_equal(env.map_index(4), [0, 0, 1, 1])
  with pytest.raises(ValueError, match='multiple of the number of maps'):
    reset(keys[:3])


@pytest.mark.parametrize('env_id,key', [('CartPole-v1', 'scalars'),
                                        ('Catch-bsuite', 'spatial'),
                                        ('Breakout-MinAtar', 'spatial')])
def test_gymnax_matches_gymnax_on_fixed_keys(env_id, key):
  env = gymnax_env.GymnaxEnv(env_id)
  raw, params = gymnax.make(env_id)
  step, raw_step = jax.jit(env.step), jax.jit(raw.step)
  obs, state = jax.jit(env.reset)(jax.random.PRNGKey(0))
  raw_obs, raw_state = jax.jit(raw.reset)(jax.random.PRNGKey(0), params)
  for t in range(8):
    assert obs[key].shape == env.observation_spec[key][0]
    np.testing.assert_allclose(np.reshape(obs[key], -1), np.reshape(raw_obs, -1), rtol=1e-6)
    action = t % env.num_actions
    k = jax.random.PRNGKey(t)
    obs, state, reward, done, _ = step(k, state, jnp.asarray([action]))
    raw_obs, raw_state, raw_reward, raw_done, _ = raw_step(k, raw_state, action, params)
    np.testing.assert_allclose(reward, [raw_reward], rtol=1e-6)
    assert bool(done) == bool(raw_done)
