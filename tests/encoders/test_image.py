"""chex-verified tests of encoders/image.py: patch utilities against numpy, every
ImagePreprocessor prep_type on images and video, and the ImagePostprocessor types."""
import pathlib
import sys

import haiku as hk
import jax
import numpy as np
import pytest
from absl.testing import parameterized

import chex
from perceiver_agents.blocks import position
from perceiver_agents.encoders import image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import helpers  # noqa: E402  (tests/helpers.py)

B = 2
FOURIER = dict(position_encoding_type='fourier',
               fourier_position_encoding_kwargs=dict(num_bands=2))


def np_space_to_depth(x, t, s):
  if x.ndim == 4:
    b, h, w, c = x.shape
    x = x.reshape(b, h // s, s, w // s, s, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // s, w // s, s * s * c)
  b, n, h, w, c = x.shape
  x = x.reshape(b, n // t, t, h // s, s, w // s, s, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, n // t, h // s, w // s, t * s * s * c)


def np_extract_patches(x, size):
  b, h, w, c = x.shape
  pad = size // 2
  padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
  out = np.zeros((b, h, w, size * size * c), x.dtype)
  for r in range(h):
    for col in range(w):
      for i in range(size):
        for j in range(size):
          k = (i * size + j) * c
          out[:, r, col, k:k + c] = padded[:, r + i, col + j]
  return out


class PatchUtilitiesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('image', (B, 4, 6, 3), 1, 2),
                                  ('video', (B, 4, 4, 6, 2), 2, 2),
                                  ('video_space_only', (B, 3, 4, 4, 2), 1, 2))
  def test_space_to_depth_matches_numpy_and_round_trips(self, shape, t, s):
    x = helpers.rand(*shape)
    to_depth = self.variant(lambda x: image.space_to_depth(
        x, temporal_block_size=t, spatial_block_size=s))
    deep = to_depth(x)
    np.testing.assert_array_equal(deep, np_space_to_depth(x, t, s))
    back = image.depth_to_space(deep, temporal_block_size=t, spatial_block_size=s)
    np.testing.assert_array_equal(back, x)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('size3', 3), ('size1', 1), ('size5', 5))
  def test_extract_patches_matches_numpy(self, size):
    x = helpers.rand(B, 4, 5, 2)
    out = self.variant(lambda x: image.extract_patches(x, size=size))(x)
    chex.assert_shape(out, (B, 4, 5, size * size * 2))
    np.testing.assert_array_equal(out, np_extract_patches(x, size))

  @chex.variants(with_jit=True, without_jit=True)
  def test_patches_for_flow(self):
    x = helpers.rand(B, 2, 3, 4, 3)
    out = self.variant(image.patches_for_flow)(x)
    chex.assert_shape(out, (B, 2, 3, 4, 27))
    for t in range(2):
      np.testing.assert_array_equal(out[:, t], np_extract_patches(x[:, t], 3))

  def test_bad_ranks_raise(self):
    for fn in (image.space_to_depth, image.depth_to_space):
      with pytest.raises(ValueError, match='frames must have rank 4'):
        fn(np.zeros((B, 4, 4)))
    with pytest.raises(ValueError, match='images must have rank 4'):
      image.extract_patches(np.zeros((B, 4, 4)))
    with pytest.raises(ValueError, match='images must have rank 5'):
      image.patches_for_flow(np.zeros((B, 4, 4, 3)))
    with pytest.raises(ValueError, match='images must hold 2 frames'):
      image.patches_for_flow(np.zeros((B, 3, 4, 4, 3)))


# (name, input shape, preprocessor kwargs, features shape before positions,
#  position channels)
PREP_CASES = (
    ('conv_image', (B, 8, 8, 3), dict(prep_type='conv', spatial_downsample=4,
                                      num_channels=8), (B, 2, 2, 8), 2 + 8),
    ('conv_video', (B, 2, 8, 8, 3), dict(prep_type='conv', spatial_downsample=4,
                                         num_channels=8), (B, 2, 2, 2, 8), 3 + 12),
    ('conv1x1_image', (B, 4, 4, 3), dict(prep_type='conv1x1', spatial_downsample=2,
                                         num_channels=8), (B, 2, 2, 8), 10),
    ('conv1x1_video', (B, 2, 4, 4, 3), dict(prep_type='conv1x1', spatial_downsample=2,
                                            num_channels=8), (B, 2, 2, 2, 8), 15),
    ('patches_image', (B, 4, 4, 3), dict(prep_type='patches', spatial_downsample=2),
     (B, 2, 2, 12), 10),
    ('patches_linear', (B, 4, 4, 3), dict(prep_type='patches', spatial_downsample=2,
                                          conv_after_patching=True, num_channels=8),
     (B, 2, 2, 8), 10),
    ('patches_video_t2', (B, 4, 4, 4, 3), dict(prep_type='patches', spatial_downsample=2,
                                               temporal_downsample=2),
     (B, 2, 2, 2, 24), 15),
    ('patches_two_frames_merged', (B, 2, 4, 4, 3),
     dict(prep_type='patches', spatial_downsample=2, temporal_downsample=2,
          conv_after_patching=True, num_channels=8), (B, 2, 2, 8), 10),
    ('pixels_image', (B, 4, 4, 3), dict(prep_type='pixels', spatial_downsample=2),
     (B, 2, 2, 3), 10),
    ('pixels_video', (B, 4, 4, 4, 3), dict(prep_type='pixels', spatial_downsample=2,
                                           temporal_downsample=2), (B, 2, 2, 2, 3), 15),
)


def preprocess_fn(**kwargs):
  def fn(x, is_training=False):
    return image.ImagePreprocessor(**{**FOURIER, **kwargs})(x, is_training=is_training)
  return fn


class ImagePreprocessorTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*PREP_CASES)
  def test_prep_types(self, shape, kwargs, features_shape, pos_channels):
    x = helpers.rand(*shape)
    t, params, state = helpers.init_with_state(preprocess_fn(**kwargs), x,
                                               is_training=True)
    apply = self.variant(lambda p, s, x: t.apply(p, s, None, x)[0])
    with_pos, sizes, without_pos = apply(params, state, x)
    n = int(np.prod(features_shape[1:-1]))
    c = features_shape[-1]
    assert sizes is None
    chex.assert_shape([with_pos, without_pos], [(B, n, c + pos_channels), (B, n, c)])
    chex.assert_tree_all_finite(with_pos)
    np.testing.assert_array_equal(np.asarray(with_pos)[..., :c], without_pos)
    if kwargs['prep_type'] == 'pixels':
      s, tt = kwargs['spatial_downsample'], kwargs.get('temporal_downsample', 1)
      sub = x[:, ::s, ::s] if x.ndim == 4 else x[:, ::tt, ::s, ::s]
      np.testing.assert_array_equal(without_pos, sub.reshape(B, n, c))
    elif kwargs['prep_type'] == 'patches' and not kwargs.get('conv_after_patching'):
      deep = np_space_to_depth(x, kwargs.get('temporal_downsample', 1),
                               kwargs['spatial_downsample'])
      np.testing.assert_array_equal(without_pos, deep.reshape(B, n, c))
    # The positions are the same for every example: a Fourier grid.
    np.testing.assert_allclose(np.asarray(with_pos)[0, :, c:],
                               np.asarray(with_pos)[1, :, c:])
    if params:
      grads = jax.grad(lambda p: helpers.random_loss(apply(p, state, x)[0]))(params)
      helpers.assert_every_leaf_has_gradient(grads)
    else:
      assert kwargs['prep_type'] in ('pixels', 'patches')

  @chex.variants(with_jit=True, without_jit=True)
  def test_conv_batch_norm_updates_state_when_training(self):
    x = helpers.rand(B, 8, 8, 3)
    t, params, state = helpers.init_with_state(
        preprocess_fn(prep_type='conv', num_channels=8), x, is_training=True)
    apply = self.variant(lambda p, s, x: t.apply(p, s, None, x, is_training=True))
    (out, _, _), new_state = apply(params, state, x)
    chex.assert_tree_all_finite(out)
    changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), state,
                                     new_state)
    assert any(jax.tree_util.tree_leaves(changed))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('trainable_concat', dict(position_encoding_type='trainable',
                                trainable_position_encoding_kwargs=dict(
                                    num_channels=5)), 3 + 5),
      ('trainable_add', dict(position_encoding_type='trainable',
                             concat_or_add_pos='add',
                             trainable_position_encoding_kwargs=dict(
                                 num_channels=3)), 3),
      ('fourier_projected_add_mlp', dict(concat_or_add_pos='add', project_pos_dim=3,
                                         n_extra_pos_mlp=2), 3),
  )
  def test_position_options(self, kwargs, channels):
    x = helpers.rand(B, 4, 4, 3)
    t, params = helpers.init(preprocess_fn(prep_type='pixels', spatial_downsample=2,
                                           **kwargs), x)
    apply = self.variant(t.apply)
    with_pos, _, without_pos = apply(params, None, x)
    chex.assert_shape(with_pos, (B, 4, channels))
    chex.assert_tree_all_finite(with_pos)
    if kwargs.get('concat_or_add_pos') == 'add':
      assert not np.allclose(with_pos, without_pos)
    if kwargs.get('position_encoding_type') == 'trainable':
      embs = params['image_preprocessor/~_build_network_inputs/trainable_position_encoding']['pos_embs']
      added = np.asarray(with_pos)[..., 3:] if channels > 3 else (
          np.asarray(with_pos) - np.asarray(without_pos))
      np.testing.assert_allclose(added, np.broadcast_to(embs, added.shape), atol=1e-6)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, x)[0]))(params)
    helpers.assert_every_leaf_has_gradient(grads)


def test_lazy_position_features_materialize_to_the_eager_inputs():
  """The flow preprocessing (patches of two frames, linear) with lazy Fourier
  features: same parameters, and the lazy inputs materialize to the eager ones."""
  x = helpers.rand(B, 2, 4, 6, 27)
  kwargs = dict(prep_type='patches', spatial_downsample=1, temporal_downsample=2,
                conv_after_patching=True, num_channels=8)
  eager, params = helpers.init(preprocess_fn(**kwargs), x)
  lazy = hk.transform(preprocess_fn(lazy_position_features=True, **kwargs))
  assert jax.tree.map(np.shape, lazy.init(jax.random.PRNGKey(0), x)) == \
      jax.tree.map(np.shape, params)
  want, _, want_without_pos = jax.jit(eager.apply)(params, None, x)
  got, _, without_pos = jax.jit(lazy.apply)(params, None, x)
  assert isinstance(got, position.LazyFourierFeatures)
  assert got.shape == want.shape == (B, 24, 8 + 2 + 2 * 2 * 2)
  np.testing.assert_array_equal(got.materialize(), want)
  np.testing.assert_array_equal(without_pos, want_without_pos)


@pytest.mark.parametrize('kwargs, match', [
    (dict(prep_type='pixels', lazy_position_features=True, concat_or_add_pos='add'),
     'lazy_position_features'),
    (dict(prep_type='pixels', lazy_position_features=True, project_pos_dim=4),
     'lazy_position_features'),
    (dict(prep_type='pixels', lazy_position_features=True,
          position_encoding_type='trainable',
          trainable_position_encoding_kwargs=dict(num_channels=4)),
     'lazy_position_features'),
    (dict(prep_type='fft'), 'prep_type'),
    (dict(position_encoding_type='rotary'), 'position_encoding_type'),
    (dict(concat_or_add_pos='multiply'), 'concat_or_add_pos'),
    (dict(prep_type='conv', spatial_downsample=2), 'spatial_downsample'),
    (dict(prep_type='conv', temporal_downsample=2), 'temporal_downsample'),
    (dict(prep_type='conv1x1', temporal_downsample=2), 'temporal_downsample'),
    (dict(prep_type='pixels', spatial_downsample=0), 'spatial_downsample'),
    (dict(prep_type='pixels', concat_or_add_pos='add'), 'concat_or_add_pos'),
])
def test_preprocessor_rejects_bad_config(kwargs, match):
  helpers.raises_on_init(preprocess_fn(**kwargs), helpers.rand(B, 4, 4, 3), match=match)


def test_preprocessor_rejects_bad_rank():
  helpers.raises_on_init(preprocess_fn(prep_type='pixels'), helpers.rand(B, 4, 3),
                         match='inputs must have rank 4')


def postprocess_fn(**kwargs):
  def fn(x):
    return image.ImagePostprocessor(**kwargs)(x, is_training=False)
  return fn


class ImagePostprocessorTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('pixels', (B, 6, 3), dict(input_reshape_size=(2, 3)), (B, 2, 3, 3)),
      ('conv1x1', (B, 2, 3, 5), dict(postproc_type='conv1x1', n_outputs=3),
       (B, 2, 3, 3)),
      ('conv', (B, 4, 5), dict(postproc_type='conv', n_outputs=3,
                               input_reshape_size=(2, 2)), (B, 8, 8, 3)),
      ('conv_video_batched', (B, 2, 2, 2, 4), dict(postproc_type='conv', n_outputs=3),
       (B, 2, 8, 8, 3)),
      ('conv3d', (B, 1, 2, 2, 4), dict(postproc_type='conv', n_outputs=3,
                                       temporal_upsample=2, spatial_upsample=2),
       (B, 2, 4, 4, 3)),
      ('patches', (B, 4, 12), dict(postproc_type='patches', spatial_upsample=2,
                                   input_reshape_size=(2, 2)), (B, 4, 4, 3)),
  )
  def test_postproc_types(self, shape, kwargs, out_shape):
    x = helpers.rand(*shape)
    t, params = helpers.init(postprocess_fn(**kwargs), x)
    apply = self.variant(t.apply)
    out = apply(params, None, x)
    chex.assert_shape(out, out_shape)
    chex.assert_tree_all_finite(out)
    kind = kwargs.get('postproc_type', 'pixels')
    if kind == 'pixels':
      np.testing.assert_array_equal(out, x.reshape(out_shape))
    elif kind == 'patches':
      np.testing.assert_array_equal(
          out, image.depth_to_space(x.reshape(B, 2, 2, 12), spatial_block_size=2))
    if params:
      grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, x)))(params)
      helpers.assert_every_leaf_has_gradient(grads)
    else:
      assert kind in ('pixels', 'patches')


@pytest.mark.parametrize('kwargs, match', [
    (dict(postproc_type='fft'), 'postproc_type'),
    (dict(postproc_type='pixels', spatial_upsample=2), 'pixels'),
    (dict(postproc_type='conv'), 'n_outputs'),
    (dict(postproc_type='conv1x1'), 'n_outputs'),
])
def test_postprocessor_rejects_bad_config(kwargs, match):
  helpers.raises_on_init(postprocess_fn(**kwargs), helpers.rand(B, 2, 2, 3), match=match)


@pytest.mark.parametrize('padding,side', [('same', 4), ('torch', 3)])
def test_conv_downsample_paddings(padding, side):
  """'torch' (transformers' port): conv padded 3 on every side, max-pool unpadded."""
  f = hk.transform_with_state(lambda x: image.Conv2DDownsample(padding=padding)(
      x, is_training=True))
  x = np.ones((1, 16, 16, 3), np.float32)
  params, state = f.init(jax.random.PRNGKey(0), x)
  out, _ = f.apply(params, state, None, x)
  assert out.shape == (1, side, side, 64)
  with pytest.raises(ValueError, match='padding'):
    hk.transform(lambda: image.Conv2DDownsample(padding='valid')).init(None)
