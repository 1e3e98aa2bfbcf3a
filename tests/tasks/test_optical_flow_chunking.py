"""optical_flow's memory fields (model.decode_chunk_size, model.cross_attend_kv_chunk_size)
change neither the parameters nor the predicted flow."""
import jax
import numpy as np
import pytest

from perceiver_agents.tasks import base, optical_flow


def test_chunked_config_predicts_the_same_flow():
  config = base.make_config(optical_flow, ['preset=local'])
  model = optical_flow.build_model(config)
  frames = np.random.RandomState(0).uniform(-1, 1, (1, 2, 11, 17, 3)).astype(np.float32)
  params, state = model.init(jax.random.PRNGKey(0), {'frames': frames})
  # The published init zeroes the flow head: perturb so the output is not trivial.
  rng = np.random.RandomState(1)
  params = jax.tree.map(lambda p: p + 0.05 * rng.randn(*p.shape).astype(np.float32),
                        params)
  config.model.decode_chunk_size = 40       # 8 * 12 = 96 queries: 3 chunks
  config.model.cross_attend_kv_chunk_size = 50
  chunked = optical_flow.build_model(config)
  assert jax.tree.map(np.shape, chunked.init(jax.random.PRNGKey(0),
                                             {'frames': frames})[0]) == \
      jax.tree.map(np.shape, params)
  run = lambda m: jax.jit(lambda p, x: m.apply(p, state, None, {'frames': x})[0])(
      params, frames)  # 11 x 17: tiled
  want, got = run(model), run(chunked)
  assert np.abs(want).max() > 1e-3
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_negative_chunk_size_is_a_clear_error():
  config = optical_flow.get_config()
  config.model.decode_chunk_size = -1
  with pytest.raises(ValueError, match='model.decode_chunk_size'):
    optical_flow.model_kwargs(config)
