"""chex-verified tests of blocks/position.py: Fourier features against a numpy formula,
the trainable encoding, the projector and the builder's checks."""
import pathlib
import sys

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import chex
from perceiver_agents.blocks import position
from perceiver_agents.blocks import protocols

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import helpers  # noqa: E402  (tests/helpers.py)

B = 2


def np_fourier(pos, num_bands, max_resolution, concat_pos=True, sine_only=False):
  """The published formula, written out: for each dim i and band k,
  f_ik = 1 + k * (res_i / 2 - 1) / (K - 1); features sin(pi f x_i) (dim-major), then
  the same with cos; the raw position first."""
  pos = np.asarray(pos, np.float64)
  sines, cosines = [], []
  for i, res in enumerate(max_resolution):
    for k in range(num_bands):
      f = 1.0 + k * (res / 2 - 1.0) / (num_bands - 1) if num_bands > 1 else 1.0
      sines.append(np.sin(np.pi * f * pos[..., i]))
      cosines.append(np.cos(np.pi * f * pos[..., i]))
  features = np.stack(sines if sine_only else sines + cosines, axis=-1)
  return np.concatenate([pos, features], -1) if concat_pos else features


def np_grid(index_dims):
  axes = [np.linspace(-1.0, 1.0, n) for n in index_dims]
  return np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, len(index_dims))


class FourierFeaturesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('default', True, False), ('sine_only', True, True),
      ('no_pos', False, False), ('sine_only_no_pos', False, True))
  def test_matches_numpy_formula(self, concat_pos, sine_only):
    index_dims, num_bands, max_res = (3, 4), 3, (6, 10)
    pos = np.broadcast_to(np_grid(index_dims), (B, 12, 2)).astype(np.float32)
    out = self.variant(lambda p: position.fourier_features(
        p, num_bands=num_bands, max_resolution=max_res, concat_pos=concat_pos,
        sine_only=sine_only))(pos)
    d, k = 2, num_bands
    channels = (d if concat_pos else 0) + (1 if sine_only else 2) * d * k
    chex.assert_shape(out, (B, 12, channels))
    chex.assert_tree_all_finite(out)
    np.testing.assert_allclose(
        out, np_fourier(pos, num_bands, max_res, concat_pos, sine_only),
        atol=1e-5)

  def test_band_endpoints(self):
    # Bands run linearly from 1 to max_resolution / 2: at x = 0.5 with resolution 8,
    # the two bands are sin(pi / 2) and sin(2 pi), then the cosines.
    out = position.fourier_features(np.array([[0.5]], np.float32), num_bands=2,
                                    max_resolution=(8,), concat_pos=False)
    np.testing.assert_allclose(out, [[1.0, 0.0, 0.0, 1.0]], atol=1e-5)

  def test_mismatched_max_resolution_raises(self):
    with pytest.raises(ValueError, match='max_resolution'):
      position.fourier_features(np.zeros((B, 4, 2), np.float32), num_bands=2,
                                max_resolution=(4,))


def test_linear_positions_and_positions_of_indices():
  grid = position.linear_positions((3, 4))
  chex.assert_shape(grid, (3, 4, 2))
  np.testing.assert_allclose(np.reshape(grid, (-1, 2)), np_grid((3, 4)), atol=1e-6)
  idx = np.array([0, 5, 11])
  pos = position.positions_of_indices(idx, (3, 4))
  rows, cols = np.unravel_index(idx, (3, 4))
  np.testing.assert_allclose(
      pos, np.stack([-1 + 2 * rows / 3, -1 + 2 * cols / 4], 1), atol=1e-6)


class FourierPositionEncodingTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_grid_and_given_positions(self):
    index_dims = (2, 3)
    t = hk.transform(lambda pos: position.FourierPositionEncoding(
        index_dims=index_dims, num_bands=4, max_resolution=(8, 8))(B, pos))
    assert t.init(None, None) == {}
    apply = self.variant(t.apply)
    out = apply({}, None, None)
    chex.assert_shape(out, (B, 6, 2 + 2 * 2 * 4))
    expected = np_fourier(np_grid(index_dims), 4, (8, 8))
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-5)
    pos = np.random.RandomState(0).uniform(-1, 1, (B, 5, 2)).astype(np.float32)
    out = apply({}, None, pos)
    chex.assert_shape(out, (B, 5, 18))
    chex.assert_tree_all_finite(out)
    np.testing.assert_allclose(out, np_fourier(pos, 4, (8, 8)), atol=1e-5)

  def test_max_resolution_defaults_to_index_dims(self):
    out = hk.transform(lambda: position.FourierPositionEncoding(
        index_dims=(4, 6), num_bands=3)(1)).apply({}, None)
    np.testing.assert_allclose(out[0], np_fourier(np_grid((4, 6)), 3, (4, 6)),
                               atol=1e-5)

  def test_bad_config_raises(self):
    with pytest.raises(ValueError, match='max_resolution'):
      hk.transform(lambda: position.FourierPositionEncoding(
          index_dims=(4, 6), num_bands=3, max_resolution=(4,))).init(None)
    with pytest.raises(ValueError, match='num_bands'):
      hk.transform(lambda: position.FourierPositionEncoding(
          index_dims=(4,), num_bands=0)).init(None)
    with pytest.raises(ValueError, match='pos has 1 coordinates'):
      hk.transform(lambda: position.FourierPositionEncoding(
          index_dims=(4, 6), num_bands=3)(B, np.zeros((B, 5, 1)))).init(None)


class TrainablePositionEncodingTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_shapes_broadcast_and_gradients(self):
    t, params = helpers.init(lambda: position.TrainablePositionEncoding(
        index_dim=6, num_channels=8)(B))
    embs = params['trainable_position_encoding']['pos_embs']
    chex.assert_shape(embs, (6, 8))
    apply = self.variant(t.apply)
    out = apply(params, None)
    chex.assert_shape(out, (B, 6, 8))
    for b in range(B):
      np.testing.assert_array_equal(out[b], embs)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None)))(params)
    helpers.assert_every_leaf_has_gradient(grads)

  def test_no_batch_and_ignored_pos(self):
    t, params = helpers.init(lambda pos: position.TrainablePositionEncoding(
        index_dim=6, num_channels=8)(None, pos), None)
    out = t.apply(params, None, np.zeros((B, 6, 2), np.float32))
    np.testing.assert_array_equal(out, params['trainable_position_encoding']['pos_embs'])

  def test_real_init_scale(self):
    params = hk.transform(lambda: position.TrainablePositionEncoding(
        index_dim=64, num_channels=16, init_scale=0.02)(None)).init(
            jax.random.PRNGKey(0))
    embs = np.asarray(params['trainable_position_encoding']['pos_embs'])
    assert 0.01 < embs.std() < 0.03 and np.abs(embs).max() <= 0.04 + 1e-6

  def test_bad_config_raises(self):
    for kwargs, name in [(dict(index_dim=0), 'index_dim'),
                         (dict(index_dim=3, num_channels=0), 'num_channels')]:
      with pytest.raises(ValueError, match=name):
        hk.transform(lambda: position.TrainablePositionEncoding(**kwargs)).init(None)


class ProjectorAndBuilderTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('fourier', 'fourier'), ('trainable', 'trainable'))
  def test_projected_encoding(self, kind):
    def fn():
      return position.build_position_encoding(
          kind, index_dims=(2, 3), project_pos_dim=5,
          trainable_position_encoding_kwargs=dict(num_channels=4),
          fourier_position_encoding_kwargs=dict(num_bands=2))(batch_size=B)

    t, params = helpers.init(fn)
    apply = self.variant(t.apply)
    out = apply(params, None)
    chex.assert_shape(out, (B, 6, 5))
    chex.assert_tree_all_finite(out)
    linear = params['position_encoding_projector/linear']
    base = (np_fourier(np_grid((2, 3)), 2, (2, 3)) if kind == 'fourier' else
            params['trainable_position_encoding'][
                'pos_embs'])
    np.testing.assert_allclose(
        out, np.broadcast_to(base @ linear['w'] + linear['b'], out.shape),
        atol=1e-5)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None)))(params)
    helpers.assert_every_leaf_has_gradient(grads)

  def test_builder_kinds_and_channels(self):
    enc = hk.transform(lambda: position.build_position_encoding(
        'fourier', index_dims=(4,), fourier_position_encoding_kwargs=dict(
            num_bands=3, concat_pos=False))(batch_size=B)).apply({}, None)
    chex.assert_shape(enc, (B, 4, 6))
    t, params = helpers.init(lambda: position.build_position_encoding(
        'trainable', index_dims=(2, 3),
        trainable_position_encoding_kwargs=dict(num_channels=7))(batch_size=B))
    chex.assert_shape(t.apply(params, None), (B, 6, 7))


@pytest.mark.parametrize('kind, kwargs, match', [
    ('sinusoid', {}, 'position_encoding_type'),
    ('trainable', {}, 'trainable_position_encoding_kwargs'),
    ('fourier', {}, 'fourier_position_encoding_kwargs'),
])
def test_build_position_encoding_errors(kind, kwargs, match):
  with pytest.raises(ValueError, match=match):
    hk.transform(lambda: position.build_position_encoding(
        kind, index_dims=(4,), **kwargs)).init(None)


class LazyFourierFeaturesTest(chex.TestCase):
  """FourierPositionEncoding.lazy: features [B, N, C] and positions [B, N, d] that
  materialize, whole or one slice along N at a time, to the eager
  concatenate([features, encoding]) rows [B, N, C + P]."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('grid', False, True, False), ('given_positions', True, True, False),
      ('sine_only_no_pos', False, False, True))
  def test_materializes_to_the_eager_rows(self, given, concat_pos, sine_only):
    index_dims, c = (3, 4), 5
    features = helpers.rand(B, 12, c, seed=1)
    pos = (np.random.RandomState(2).uniform(-1, 1, (B, 12, 2)).astype(np.float32)
           if given else None)
    kwargs = dict(index_dims=index_dims, num_bands=3, max_resolution=(6, 10),
                  concat_pos=concat_pos, sine_only=sine_only)

    def fn(features, pos):
      encoding = position.FourierPositionEncoding(**kwargs)
      eager = jnp.concatenate([features, encoding(B, pos)], axis=-1)
      lazy = encoding.lazy(features, pos=pos)
      assert lazy.shape == eager.shape and lazy.ndim == 3
      assert lazy.dtype == eager.dtype
      # A slice of every leaf (what a chunk is) materializes to the slice of the rows.
      part = jax.tree.map(lambda x: x[:, 5:9], lazy)
      return eager, lazy.materialize(), part.materialize()

    eager, lazy, part = self.variant(hk.transform(fn).apply)({}, None, features, pos)
    np.testing.assert_array_equal(lazy, eager)
    np.testing.assert_array_equal(part, np.asarray(eager)[:, 5:9])
    # Channel order: the features, then the published formula's [pos, sin, cos].
    grid = pos if given else np.broadcast_to(np_grid(index_dims), (B, 12, 2))
    np.testing.assert_array_equal(np.asarray(lazy)[..., :c], features)
    np.testing.assert_allclose(
        np.asarray(lazy)[..., c:],
        np_fourier(grid, 3, (6, 10), concat_pos=concat_pos, sine_only=sine_only),
        atol=1e-5)

  def test_is_a_pytree_of_features_and_positions(self):
    lazy = hk.transform(lambda x: position.FourierPositionEncoding(
        index_dims=(4,), num_bands=2).lazy(x)).apply({}, None, helpers.rand(B, 4, 3))
    features, positions = jax.tree.leaves(lazy)
    chex.assert_shape([features, positions], [(B, 4, 3), (B, 4, 1)])
    assert lazy.shape == (B, 4, 3 + 1 + 2 * 2)
    assert protocols.materialize(features) is features  # arrays pass through
    with pytest.raises(ValueError, match='disagree'):
      hk.transform(lambda x: position.FourierPositionEncoding(
          index_dims=(4,), num_bands=2).lazy(x, pos=np.zeros((B, 5, 1)))).apply(
              {}, None, helpers.rand(B, 4, 3))
