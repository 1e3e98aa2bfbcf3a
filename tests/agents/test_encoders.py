"""The built-in encoders satisfy the encoder contract; your own plugs in by config."""

import textwrap

import haiku as hk
import jax
import numpy as np
import pytest

from perceiver_agents import testing
from perceiver_agents.agents import encoders, networks
from perceiver_agents.agents.envs import entity_micro


@pytest.mark.parametrize('name,kwargs', [
    ('perceiver_io', dict(num_latents=4, num_channels=8, num_self_attends=1, num_heads=2)),
    ('transformer', dict(num_layers=2, num_channels=8, num_heads=2)),
    ('mlp', dict(hidden_sizes=(8,))),
])
def test_entity_encoders_meet_the_contract(name, kwargs):
  testing.check_entity_encoder(encoders.ENTITY_ENCODERS[name], **kwargs)


@pytest.mark.parametrize('name,kwargs', [
    ('conv', dict(channels=(4,))),
    ('perceiver_io', dict(num_latents=4, num_channels=8, num_heads=2, num_bands=3)),
])
def test_spatial_encoders_meet_the_contract(name, kwargs):
  testing.check_spatial_encoder(encoders.SPATIAL_ENCODERS[name], **kwargs)


class _LeakyEncoder(hk.Module):
  """Violates the contract: its embedding sums all rows, padding included."""

  def __init__(self, *, output_size, entity_size, name=None):
    super().__init__(name=name)
    self._output_size, self._entity_size = output_size, entity_size

  def __call__(self, entities, mask, *, is_training):
    features = hk.Linear(self._entity_size)(entities) * mask[..., None]
    embedding = hk.Linear(self._output_size)(entities.sum(1))
    return encoders.EncoderOutput(embedding, features)


def test_the_contract_check_catches_a_padding_leak():
  with pytest.raises(AssertionError, match='padded'):
    testing.check_entity_encoder(_LeakyEncoder)


def test_the_perceiver_encoder_uses_m_latents_not_n_squared():
  # Cost grows linearly in N for Perceiver IO: compare attention FLOPs at N and 4N.
  def flops(name, n):
    def f(x, m):
      kw = dict(num_channels=16, num_heads=2)
      kw.update(dict(num_latents=4, num_self_attends=1) if name == 'perceiver_io'
                else dict(num_layers=1))
      return encoders.ENTITY_ENCODERS[name](output_size=8, entity_size=8, **kw)(
          x, m, is_training=False)
    model = hk.transform(f)
    x, m = np.zeros([1, n, 3], np.float32), np.ones([1, n], bool)
    params = model.init(jax.random.PRNGKey(0), x, m)
    cost = jax.jit(model.apply).lower(params, None, x, m).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost['flops']
  perceiver_ratio = flops('perceiver_io', 256) / flops('perceiver_io', 64)
  transformer_ratio = flops('transformer', 256) / flops('transformer', 64)
  assert perceiver_ratio < 4.5 < transformer_ratio


def test_a_user_encoder_plugs_in_by_module_path(tmp_path, monkeypatch, tiny_agent_config):
  (tmp_path / 'my_encoders.py').write_text(textwrap.dedent('''
      import haiku as hk, jax.numpy as jnp
      from perceiver_agents.agents.encoders import EncoderOutput, masked_mean

      class SumEncoder(hk.Module):
        def __init__(self, *, output_size, entity_size, name=None):
          super().__init__(name=name)
          self._d, self._e = output_size, entity_size
        def __call__(self, entities, mask, *, is_training):
          x = hk.Linear(self._e)(entities) * mask[..., None]
          return EncoderOutput(hk.Linear(self._d)(masked_mean(x, mask)), x)
  '''))
  monkeypatch.syspath_prepend(str(tmp_path))
  import my_encoders  # pylint: disable=import-outside-toplevel
  testing.check_entity_encoder(my_encoders.SumEncoder)
  tiny_agent_config.encoder = 'my_encoders:SumEncoder'
  spec = entity_micro.EntityMicroEnv().env_spec()

  def step(obs):
    net = networks.AgentNetwork(env_spec=spec, config=tiny_agent_config)
    first = np.ones([1], bool)
    return net.step(obs, first, net.initial_state(1))
  model = hk.transform(step)
  obs = testing.zeros_like_spec(spec)
  params = model.init(jax.random.PRNGKey(0), obs)
  assert any('sum_encoder' in k for k in params)
  out, _ = model.apply(params, jax.random.PRNGKey(1), obs)
  assert out.logits['target'].shape == (1, spec.observation['entities'][0][0])


def test_unknown_encoder_names_are_clear(tiny_agent_config):
  tiny_agent_config.encoder = 'perceiverio'
  spec = entity_micro.EntityMicroEnv().env_spec()
  model = hk.transform(lambda: networks.AgentNetwork(env_spec=spec,
                                                     config=tiny_agent_config))
  with pytest.raises(ValueError, match="agent.encoder: unknown encoder 'perceiverio'"):
    model.init(jax.random.PRNGKey(0))
  tiny_agent_config.encoder = 'no_such_module_xyz:Enc'
  with pytest.raises(ValueError, match='cannot import'):
    model.init(jax.random.PRNGKey(0))


def test_encoder_output_shapes_are_checked_with_their_name():
  out = encoders.EncoderOutput(np.zeros([2, 3], np.float32), None)
  with pytest.raises(ValueError, match=r"mine: embedding must have shape \(2, 8\)"):
    encoders.check_output(out, batch=2, output_size=8, features_shape=None, name='mine')


def test_entity_encoders_reject_bad_masks():
  model = hk.transform(lambda x, m: encoders.MLPEntityEncoder(output_size=4, entity_size=4)(
      x, m, is_training=False))
  x = np.zeros([2, 3, 5], np.float32)
  with pytest.raises(ValueError, match='mask: expected shape'):
    model.init(jax.random.PRNGKey(0), x, np.ones([2, 4], bool))
  with pytest.raises(ValueError, match='mask: expected bool'):
    model.init(jax.random.PRNGKey(0), x, np.ones([2, 3], np.float32))
