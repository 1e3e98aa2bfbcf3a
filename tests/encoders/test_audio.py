"""chex-verified tests of encoders/audio.py: patching raw audio, positions, and the
patch-projecting postprocessor."""
import pathlib
import sys

import jax
import numpy as np
import pytest
from absl.testing import parameterized

import chex
from perceiver_agents.encoders import audio

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import helpers  # noqa: E402  (tests/helpers.py)

B, S, P = 2, 12, 4


def np_fourier_1d(n, num_bands):
  pos = np.linspace(-1, 1, n)
  x = pos[:, None] * np.linspace(1.0, n / 2, num_bands)
  return np.concatenate([pos[:, None], np.sin(np.pi * x), np.cos(np.pi * x)], -1)


def preprocess_fn(**kwargs):
  config = dict(samples_per_patch=P, position_encoding_type='fourier',
                fourier_position_encoding_kwargs=dict(num_bands=2))
  config.update(kwargs)
  return lambda x: audio.AudioPreprocessor(**config)(x, is_training=False)


class AudioPreprocessorTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('flat', (B, S)), ('channel', (B, S, 1)))
  def test_patches_and_fourier_positions(self, shape):
    x = helpers.rand(*shape)
    t, params = helpers.init(preprocess_fn(), x)
    assert params == {}
    with_pos, sizes, patches = self.variant(t.apply)(params, None, x)
    assert sizes is None
    chex.assert_shape([with_pos, patches], [(B, S // P, P + 5), (B, S // P, P)])
    np.testing.assert_array_equal(patches, x.reshape(B, S // P, P))
    np.testing.assert_array_equal(np.asarray(with_pos)[..., :P], patches)
    np.testing.assert_allclose(
        np.asarray(with_pos)[..., P:], np.broadcast_to(np_fourier_1d(S // P, 2),
                                                       (B, S // P, 5)), atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_trainable_added_positions_get_gradients(self):
    x = helpers.rand(B, S)
    t, params = helpers.init(preprocess_fn(
        position_encoding_type='trainable', concat_or_add_pos='add',
        trainable_position_encoding_kwargs=dict(num_channels=P)), x)
    apply = self.variant(t.apply)
    with_pos, _, patches = apply(params, None, x)
    chex.assert_shape(with_pos, (B, S // P, P))
    embs = params['audio_preprocessor/~_build_network_inputs/trainable_position_encoding']['pos_embs']
    np.testing.assert_allclose(with_pos, patches + embs, atol=1e-6)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, x)[0]))(params)
    helpers.assert_every_leaf_has_gradient(grads)


@pytest.mark.parametrize('kwargs, shape, match', [
    (dict(), (B, S + 1), 'samples_per_patch'),
    (dict(prep_type='mel'), (B, S), 'prep_type'),
    (dict(samples_per_patch=0), (B, S), 'samples_per_patch'),
    (dict(position_encoding_type='rope'), (B, S), 'position_encoding_type'),
    (dict(concat_or_add_pos='both'), (B, S), 'concat_or_add_pos'),
])
def test_preprocessor_rejects_bad_inputs(kwargs, shape, match):
  helpers.raises_on_init(preprocess_fn(**kwargs), helpers.rand(*shape), match=match)


class AudioPostprocessorTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_projects_and_flattens(self):
    x = helpers.rand(B, 3, 6)
    t, params = helpers.init(lambda x: audio.AudioPostprocessor(samples_per_patch=P)(
        x, is_training=False), x)
    apply = self.variant(t.apply)
    out = apply(params, None, x)
    chex.assert_shape(out, (B, 3 * P))
    lin = params['audio_postprocessor/linear']
    np.testing.assert_allclose(out, (x @ lin['w'] + lin['b']).reshape(B, -1),
                               rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, x)))(params)
    helpers.assert_every_leaf_has_gradient(grads)

  def test_rejects_unknown_postproc_type(self):
    helpers.raises_on_init(lambda x: audio.AudioPostprocessor(postproc_type='conv')(
        x, is_training=False), helpers.rand(B, 3, 6), match='postproc_type')
