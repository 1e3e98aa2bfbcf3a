"""The Anakin networks on real SMAX observations: both views, masks respected."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from perceiver_agents.agents.anakin import networks
from perceiver_agents.agents.envs.jax_envs import smax

DRAWS = 300


def _config(**kw) -> ml_collections.ConfigDict:
  c = networks.network_config()
  c.update(dict(hidden_size=16, num_channels=8, num_latents=2, entity_size=8,
                embedding_size=8, num_heads=2), **kw)
  return c


@pytest.fixture(scope='module')
def env():
  return smax.SMAXEnv('3m', max_allies=4, max_enemies=5)


@pytest.fixture(scope='module')
def outputs(env):
  """3 padded 3m observations and, per view, logits, values and DRAWS sampled actions."""
  nets = {view: networks.make_network(_config(view=view), env) for view in networks.VIEWS}

  @jax.jit  # One compilation for both views: reset, init, forward, sampling.
  def run(keys):
    obs, _ = jax.vmap(env.reset)(keys)
    out = {}
    for view, net in nets.items():
      params = net.init(jax.random.PRNGKey(0), obs)
      logits, value = net.apply(params, obs)
      draws = jnp.broadcast_to(logits, (DRAWS,) + logits.shape)
      out[view] = logits, value, networks.sample(jax.random.PRNGKey(1), draws)[0]
    return obs, out

  return jax.device_get(run(jax.random.split(jax.random.PRNGKey(0), 3)))


@pytest.mark.parametrize('view', networks.VIEWS)
def test_both_views_give_logits_per_ally_and_sample_only_available_actions(outputs, view):
  obs, out = outputs
  logits, value, actions = out[view]
  assert logits.shape == (3, 4, 5 + 5) and value.shape == (3, 4)
  assert actions.shape == (DRAWS, 3, 4)
  if view == 'global':   # One team value per environment.
    np.testing.assert_array_equal(value, np.broadcast_to(value[:, :1], value.shape))
  mask = np.asarray(obs['action_mask'])
  assert np.take_along_axis(np.broadcast_to(mask, (DRAWS,) + mask.shape),
                            np.asarray(actions)[..., None], -1).all()
  np.testing.assert_array_equal(np.asarray(actions)[:, :, 3], smax.STOP)  # padding ally


def test_unknown_view_is_named(env):
  with pytest.raises(ValueError, match="agent.view: expected one of"):
    networks.make_network(_config(view='north'), env)
