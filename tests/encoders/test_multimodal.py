"""chex-verified tests of encoders/multimodal.py: padding to a common width, ordering
by name, masking with learned tokens, and splitting outputs by modality."""
import pathlib
import sys

import haiku as hk
import jax
import numpy as np
import pytest

import chex
from perceiver_agents.encoders import audio
from perceiver_agents.encoders import image
from perceiver_agents.encoders import multimodal
from perceiver_agents.encoders import outputs

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import helpers  # noqa: E402  (tests/helpers.py)

B = 2
PREFIX = 'multimodal_preprocessor'


def inputs():
  return {'image': helpers.rand(B, 4, 4, 3), 'audio': helpers.rand(B, 8, seed=1),
          'label': np.eye(5, dtype=np.float32)[[0, 3]]}


def preprocess_fn(mask_probs=None, min_padding_size=2, is_training=False):
  def fn(x):
    modalities = {
        # 4 tokens of 3 + 10 (Fourier, 2 bands over 2 dims) channels.
        'image': image.ImagePreprocessor(
            prep_type='pixels', spatial_downsample=2, position_encoding_type='fourier',
            fourier_position_encoding_kwargs=dict(num_bands=2)),
        # 2 tokens of 4 + 5 channels.
        'audio': audio.AudioPreprocessor(
            samples_per_patch=4, position_encoding_type='fourier',
            fourier_position_encoding_kwargs=dict(num_bands=2)),
        # 1 token of 5 channels.
        'label': outputs.OneHotPreprocessor(),
    }
    return multimodal.MultimodalPreprocessor(
        modalities=modalities, mask_probs=mask_probs,
        min_padding_size=min_padding_size)(x, is_training=is_training)
  return fn


class MultimodalPreprocessorTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_padding_order_and_gradients(self):
    x = inputs()
    t, params = helpers.init(preprocess_fn(min_padding_size=3), x)
    widths = {m: params[f'{PREFIX}/{m}_padding']['pos_embs'].shape
              for m in ('audio', 'image', 'label')}
    assert widths == {'audio': (1, 7), 'image': (1, 3), 'label': (1, 11)}
    apply = self.variant(t.apply)
    tokens, sizes, without_pos = apply(params, None, x)
    assert sizes == {'audio': 2, 'image': 4, 'label': 1}
    chex.assert_shape(tokens, (B, 7, 16))
    chex.assert_tree_all_finite(tokens)
    chex.assert_shape([without_pos['audio'], without_pos['image'], without_pos['label']],
                      [(B, 2, 4), (B, 4, 3), (B, 1, 5)])
    tokens = np.asarray(tokens)
    # Sorted by name: audio, image, label; each padded with its learned vector.
    np.testing.assert_array_equal(tokens[:, :2, :4], x['audio'].reshape(B, 2, 4))
    np.testing.assert_array_equal(
        tokens[:, :2, 9:], np.broadcast_to(params[f'{PREFIX}/audio_padding']['pos_embs'],
                                           (B, 2, 7)))
    np.testing.assert_array_equal(tokens[:, 2:6, :3], without_pos['image'])
    np.testing.assert_array_equal(tokens[:, 6, :5], x['label'])
    np.testing.assert_array_equal(
        tokens[:, 6, 5:], np.broadcast_to(params[f'{PREFIX}/label_padding']['pos_embs'],
                                          (B, 1, 11))[:, 0])
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, x)[0]))(params)
    helpers.assert_every_leaf_has_gradient(grads)

  @chex.variants(with_jit=True, without_jit=True)
  def test_mask_probabilities_zero_and_one_need_no_rng(self):
    x = inputs()
    probs = {'audio': 0.0, 'image': 0.0, 'label': 1.0}
    t, params = helpers.init(preprocess_fn(mask_probs=probs), x)
    plain_t, plain_params = helpers.init(preprocess_fn(), x)
    apply = self.variant(t.apply)
    tokens, _, _ = apply(params, None, x)  # no rng key
    tokens = np.asarray(tokens)
    plain = np.asarray(plain_t.apply({k: params[k] for k in plain_params}, None, x)[0])
    np.testing.assert_array_equal(tokens[:, :6], plain[:, :6])
    mask_token = params[f'{PREFIX}/label_mask_token']['pos_embs']
    chex.assert_shape(mask_token, (1, 15))
    np.testing.assert_array_equal(tokens[:, 6], np.broadcast_to(mask_token, (B, 15)))
    assert not np.allclose(tokens[:, 6], plain[:, 6])
    # Only the mask token of the masked modality (and unmasked modalities) matter.
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, x)[0]))(params)
    for m in ('audio', 'image'):
      assert not np.any(grads[f'{PREFIX}/{m}_mask_token']['pos_embs'])
    assert np.all(grads[f'{PREFIX}/label_mask_token']['pos_embs'] != 0)
    assert not np.any(grads[f'{PREFIX}/label_padding']['pos_embs'])

  @chex.variants(with_jit=True, without_jit=True)
  def test_intermediate_mask_probability_needs_rng(self):
    x = {'image': helpers.rand(B, 8, 8, 3), 'audio': helpers.rand(B, 8, seed=1),
         'label': np.eye(5, dtype=np.float32)[[0, 3]]}
    probs = {'audio': 0.0, 'image': 0.5, 'label': 0.0}
    t, params = helpers.init(preprocess_fn(mask_probs=probs), x)
    with pytest.raises(ValueError, match='PRNGKey'):
      t.apply(params, None, x)
    apply = self.variant(t.apply)
    tokens = np.asarray(apply(params, jax.random.PRNGKey(0), x)[0])
    other = np.asarray(apply(params, jax.random.PRNGKey(1), x)[0])
    chex.assert_tree_all_finite(tokens)
    mask_token = np.asarray(params[f'{PREFIX}/image_mask_token']['pos_embs'][0])
    image_tokens = tokens[:, 2:18]  # 16 image tokens after 2 audio tokens
    masked = np.all(image_tokens == mask_token, axis=-1)
    assert masked.any() and not masked.all()
    assert not np.array_equal(tokens, other)
    assert not np.any(np.all(tokens[:, :2] == mask_token, axis=-1))


@pytest.mark.parametrize('kwargs, match', [
    (dict(mask_probs={'audio': 0.0, 'image': 0.0}), 'mask_probs lacks'),
    (dict(mask_probs={'audio': 0.0, 'image': 1.5, 'label': 0.0}), r"mask_probs\['image'\]"),
])
def test_preprocessor_rejects_bad_config(kwargs, match):
  helpers.raises_on_init(preprocess_fn(**kwargs), inputs(), match=match)


def test_preprocessor_rejects_missing_modalities():
  x = inputs()
  del x['audio']
  helpers.raises_on_init(preprocess_fn(), x, match=r"inputs lack modalities \['audio'\]")
  helpers.raises_on_init(lambda: multimodal.MultimodalPreprocessor(modalities={}),
                         match='modalities')


class MultimodalPostprocessorTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_splits_by_name_and_postprocesses(self):
    x = helpers.rand(B, 6, 4)
    sizes = {'label': 1, 'audio': 2, 'image': 3}

    def fn(x):
      return multimodal.MultimodalPostprocessor(modalities={
          'audio': audio.AudioPostprocessor(samples_per_patch=5),
          'image': image.ImagePostprocessor(postproc_type='pixels'),
          'label': outputs.ClassificationPostprocessor(num_classes=7),
      })(x, is_training=False, modality_sizes=sizes)

    t, params = helpers.init(fn, x)
    apply = self.variant(t.apply)
    out = apply(params, None, x)
    chex.assert_shape([out['audio'], out['image'], out['label']],
                      [(B, 10), (B, 3, 4), (B, 7)])
    np.testing.assert_array_equal(out['image'], x[:, 2:5])
    lin = params['classification_postprocessor/linear']
    np.testing.assert_allclose(out['label'], x[:, 5] @ lin['w'] + lin['b'],
                               rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, x)))(params)
    helpers.assert_every_leaf_has_gradient(grads)

  @chex.variants(with_jit=True, without_jit=True)
  def test_dict_input(self):
    x = {'image': helpers.rand(B, 3, 4)}
    t = hk.transform(lambda x: multimodal.MultimodalPostprocessor(
        modalities={'image': image.ImagePostprocessor()}, input_is_dict=True)(
            x, is_training=False))
    out = self.variant(t.apply)({}, None, x)
    np.testing.assert_array_equal(out['image'], x['image'])

  def test_flat_input_needs_sizes(self):
    fn = lambda x: multimodal.MultimodalPostprocessor(
        modalities={'image': image.ImagePostprocessor()})(x, is_training=False)
    helpers.raises_on_init(fn, helpers.rand(B, 3, 4), match='modality_sizes')
