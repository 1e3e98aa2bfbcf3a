"""chex-based checks of the encoder contract, for your own encoders in your own tests.

    from perceiver_agents import testing

    def test_my_encoder():
      testing.check_entity_encoder(my_package.MyEncoder)           # raises on a violation

The contract is documented in perceiver_agents/agents/encoders.py. The checks build the
encoder with `factory(*, output_size, entity_size, **kwargs)` inside hk.transform and test,
with and without jax.jit: output types and shapes; zero features at padded entities;
padding invariance (changing padded features, or appending more padding, changes neither
the embedding nor the features of real entities); finite outputs with no real entity.
"""

from typing import Any, Callable

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_agents.agents import encoders as encoders_lib


def _entity_fn(factory, output_size, entity_size, kwargs):
  def forward(entities, mask):
    encoder = factory(output_size=output_size, entity_size=entity_size, **kwargs)
    return encoder(entities, mask, is_training=False)
  return hk.transform(forward)


def check_entity_encoder(factory: Callable[..., Any], *, num_features: int = 5,
                         batch: int = 2, num_entities: int = 6, output_size: int = 8,
                         entity_size: int = 4, atol: float = 1e-5, seed: int = 0,
                         **kwargs: Any) -> None:
  """Checks an entity-encoder factory against the contract; raises AssertionError."""
  model = _entity_fn(factory, output_size, entity_size, kwargs)
  rng = np.random.default_rng(seed)
  entities = rng.normal(size=[batch, num_entities, num_features]).astype(np.float32)
  counts = np.linspace(1, num_entities - 1, batch).astype(int)             # some padding
  mask = np.arange(num_entities)[None] < counts[:, None]                  # [B, N]
  params = model.init(jax.random.PRNGKey(seed), entities, mask)
  for use_jit in (False, True):
    apply = jax.jit(model.apply) if use_jit else model.apply
    where = 'with jit' if use_jit else 'without jit'
    out = apply(params, None, entities, mask)
    assert isinstance(out, encoders_lib.EncoderOutput), (
        f'{where}: expected EncoderOutput, got {type(out).__name__}')
    chex.assert_shape(out.embedding, (batch, output_size))
    chex.assert_shape(out.features, (batch, num_entities, entity_size))
    chex.assert_tree_all_finite(out)
    padded = np.asarray(out.features)[~mask]
    assert np.allclose(padded, 0.0), f'{where}: features at padded entities must be 0.'

    noisy = np.where(mask[..., None], entities, 100.0 * rng.normal(size=entities.shape))
    out_noisy = apply(params, None, noisy.astype(np.float32), mask)
    chex.assert_trees_all_close(out_noisy, out, atol=atol,
                                custom_message=f'{where}: outputs depend on padded entities')

    extra = 3
    longer = np.concatenate([entities, np.ones([batch, extra, num_features], np.float32)], 1)
    longer_mask = np.concatenate([mask, np.zeros([batch, extra], bool)], 1)
    out_long = apply(params, None, longer, longer_mask)
    chex.assert_trees_all_close(
        out_long.embedding, out.embedding, atol=atol,
        custom_message=f'{where}: the embedding depends on the amount of padding')
    chex.assert_trees_all_close(
        out_long.features[:, :num_entities], out.features, atol=atol,
        custom_message=f'{where}: entity features depend on the amount of padding')

    empty = apply(params, None, entities, np.zeros_like(mask))
    chex.assert_tree_all_finite(empty)


def check_spatial_encoder(factory: Callable[..., Any], *, batch: int = 2,
                          height: int = 5, width: int = 4, in_channels: int = 3,
                          output_size: int = 8, cell_size: int = 4, seed: int = 0,
                          **kwargs: Any) -> None:
  """Checks a spatial-encoder factory: output types, shapes, finiteness, jit/no-jit."""
  def forward(planes):
    encoder = factory(output_size=output_size, cell_size=cell_size, **kwargs)
    return encoder(planes, is_training=False)
  model = hk.transform(forward)
  planes = np.random.default_rng(seed).normal(
      size=(batch, height, width, in_channels)).astype(np.float32)
  params = model.init(jax.random.PRNGKey(seed), planes)
  outs = [model.apply(params, None, planes), jax.jit(model.apply)(params, None, planes)]
  for out in outs:
    assert isinstance(out, encoders_lib.EncoderOutput), type(out).__name__
    chex.assert_shape(out.embedding, (batch, output_size))
    chex.assert_shape(out.features, (batch, height, width, cell_size))
    chex.assert_tree_all_finite(out)
  chex.assert_trees_all_close(outs[0], outs[1], atol=1e-5)


def zeros_like_spec(spec) -> dict:
  """An all-zero observation of an EnvSpec, as jnp arrays with a batch axis of 1."""
  return {k: jnp.asarray(v)[None] for k, v in spec.zeros().items()}
