"""The unit controller: order invariance, masks, any unit count, swappable encoders."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_agents.agents import unit_controller
from perceiver_agents.agents.anakin import networks

ALLIES, ENEMIES, FEATURES = 3, 4, 18
ENCODERS = ('perceiver_io', 'transformer', 'mlp')


def _controller(encoder):
  def forward(units, mask, action_mask):
    return unit_controller.UnitController(
        encoder=encoder, embedding_size=8, entity_size=8, hidden_size=16,
        encoder_kwargs=unit_controller.encoder_kwargs(
            encoder, num_latents=3, num_channels=8, num_layers=1, num_heads=2))(
                units, mask, action_mask, enemy_offset=ALLIES)
  return hk.without_apply_rng(hk.transform(forward))


def _inputs(seed, batch=2, allies=ALLIES, enemies=ENEMIES):
  rng = np.random.default_rng(seed)
  units = rng.normal(size=(batch, allies + enemies, FEATURES)).astype(np.float32)
  mask = rng.random((batch, allies + enemies)) < 0.8
  action_mask = rng.random((batch, allies, 5 + enemies)) < 0.6
  action_mask[..., 4] = True  # Stop is always available.
  return units, mask, action_mask


@pytest.mark.parametrize('encoder', ENCODERS)
def test_permuting_allies_and_enemies_permutes_the_actions(encoder):
  net = _controller(encoder)
  units, mask, action_mask = _inputs(0)
  params = net.init(jax.random.PRNGKey(0), units, mask, action_mask)
  apply = jax.jit(net.apply)
  logits, value = apply(params, units, mask, action_mask)
  ally_perm, enemy_perm = np.array([2, 0, 1]), np.array([3, 1, 0, 2])
  unit_perm = np.concatenate([ally_perm, ALLIES + enemy_perm])
  action_perm = np.concatenate([np.arange(5), 5 + enemy_perm])
  p_logits, p_value = apply(params, units[:, unit_perm], mask[:, unit_perm],
                            action_mask[:, ally_perm][:, :, action_perm])
  np.testing.assert_allclose(p_logits, np.asarray(logits)[:, ally_perm][:, :, action_perm],
                             atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(p_value, value, atol=1e-5, rtol=1e-5)
  # The actions move with their allies and targets (not an order-blind output).
  assert not np.allclose(np.asarray(logits)[:, ally_perm], logits, atol=1e-3)


def test_masked_actions_are_never_sampled():
  net = _controller('perceiver_io')
  units, mask, action_mask = _inputs(1, batch=64)
  action_mask[::3] = False
  action_mask[::3, :, 0] = True  # Rows with one available action.
  params = net.init(jax.random.PRNGKey(0), units, mask, action_mask)
  logits, _ = jax.jit(net.apply)(params, units, mask, action_mask)
  sample = jax.jit(jax.vmap(networks.sample, in_axes=(0, None)))
  actions, logp = sample(jax.random.split(jax.random.PRNGKey(1), 200), logits)
  chosen = np.take_along_axis(np.broadcast_to(action_mask, (200,) + action_mask.shape),
                              np.asarray(actions)[..., None], -1)
  assert chosen.all()
  assert np.isfinite(np.asarray(logp)).all()
  np.testing.assert_array_equal(np.asarray(actions)[:, ::3], 0)


def test_one_set_of_parameters_runs_any_unit_count():
  net = _controller('perceiver_io')
  params = net.init(jax.random.PRNGKey(0), *_inputs(2))
  big = _inputs(3, allies=ALLIES, enemies=9)
  logits, value = net.apply(params, *big)
  assert logits.shape == (2, ALLIES, 5 + 9) and value.shape == (2,)
  assert np.isfinite(np.asarray(value)).all()


def test_no_real_unit_gives_finite_outputs():
  net = _controller('perceiver_io')
  units, mask, action_mask = _inputs(4)
  params = net.init(jax.random.PRNGKey(0), units, mask, action_mask)
  logits, value = net.apply(params, units, np.zeros_like(mask), action_mask)
  assert np.isfinite(np.asarray(value)).all()
  assert np.isfinite(np.asarray(jax.nn.log_softmax(logits))[action_mask]).all()


def test_unknown_encoder_and_misfit_layout_are_named():
  with pytest.raises(ValueError, match=r"agent.encoder: unknown encoder 'lstm'.*'mlp'"):
    hk.transform(lambda: unit_controller.UnitController(encoder='lstm')).init(None)
  net = _controller('mlp')
  units, mask, action_mask = _inputs(0)
  with pytest.raises(ValueError, match='do not fit'):
    net.init(jax.random.PRNGKey(0), units[:, :5], mask[:, :5], action_mask)
