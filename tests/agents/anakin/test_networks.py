"""The Anakin networks on real SMAX observations: both views, masks respected."""

import jax
import ml_collections
import numpy as np
import pytest

from perceiver_agents.agents.anakin import networks
from perceiver_agents.agents.envs.jax_envs import smax


@pytest.fixture(scope='module')
def padded_obs():
  env = smax.SMAXEnv('3m', max_allies=4, max_enemies=5)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  obs, _ = jax.jit(jax.vmap(env.reset))(keys)
  return env, obs


def _config(**kw) -> ml_collections.ConfigDict:
  c = networks.network_config()
  c.update(dict(hidden_size=16, num_channels=8, num_latents=2, entity_size=8,
                embedding_size=8, num_heads=2), **kw)
  return c


@pytest.mark.parametrize('view', networks.VIEWS)
def test_both_views_give_logits_per_ally_and_sample_only_available_actions(padded_obs, view):
  env, obs = padded_obs
  net = networks.make_network(_config(view=view), env)
  params = net.init(jax.random.PRNGKey(0), obs)
  logits, value = jax.jit(net.apply)(params, obs)
  assert logits.shape == (3, 4, 5 + 5) and value.shape == (3, 4)
  if view == 'global':   # One team value per environment.
    np.testing.assert_array_equal(value, np.broadcast_to(value[:, :1], value.shape))
  keys = jax.random.split(jax.random.PRNGKey(1), 300)
  actions, _ = jax.jit(jax.vmap(networks.sample, in_axes=(0, None)))(keys, logits)
  mask = np.asarray(obs['action_mask'])
  assert np.take_along_axis(np.broadcast_to(mask, (300,) + mask.shape),
                            np.asarray(actions)[..., None], -1).all()
  np.testing.assert_array_equal(np.asarray(actions)[:, :, 3], smax.STOP)  # padding ally


def test_unknown_view_is_named(padded_obs):
  with pytest.raises(ValueError, match="agent.view: expected one of"):
    networks.make_network(_config(view='north'), padded_obs[0])
