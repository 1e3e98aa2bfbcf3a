"""ImageNet augmentations: shapes, ranges, determinism under a fixed seed (TF ops)."""

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')

from perceiver_agents.data import imagenet, randaugment  # pylint: disable=g-import-not-at-top


def _image(h=20, w=28, seed=0):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.integers(0, 256, (h, w, 3)).astype(np.float32))


def _jpeg(h=30, w=40, seed=0):
  rng = np.random.default_rng(seed)
  return tf.io.encode_jpeg(tf.constant(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))


@pytest.mark.parametrize('name', randaugment.OPS)
def test_every_op_keeps_shape_and_range(name):
  image = _image()
  out = randaugment.op(name)(image, tf.constant(10.0), tf.constant(-1.0))
  assert out.shape == image.shape and out.dtype == tf.float32
  assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0


def test_ops_do_what_they_say():
  image = _image()
  np.testing.assert_array_equal(randaugment.identity(image, 5.0, 1.0), image)
  solarized = randaugment.solarize(image, tf.constant(10.0), 1.0)   # threshold 0: invert all
  np.testing.assert_allclose(solarized, 255.0 - image)
  posterized = randaugment.posterize(image, tf.constant(10.0), 1.0)  # 4 bits kept
  assert np.all(np.asarray(posterized) % 16 == 0)
  shifted = randaugment.translate_x(image, tf.constant(10.0), 1.0)   # 45% of the width
  assert np.all(np.asarray(shifted)[:, -12:] == randaugment.FILL)
  equalized = np.asarray(randaugment.equalize(image, 0.0, 1.0))
  assert equalized.min() < 20 and equalized.max() > 235


def test_randaugment_deterministic_in_seed():
  image = _image()
  a = randaugment.randaugment(image, tf.constant([1, 2]), num_layers=4, magnitude=9)
  b = randaugment.randaugment(image, tf.constant([1, 2]), num_layers=4, magnitude=9)
  outs = [randaugment.randaugment(image, tf.constant([s, 3]), num_layers=4, magnitude=9)
          for s in range(6)]
  np.testing.assert_array_equal(a, b)
  assert a.shape == image.shape
  assert len({np.asarray(o).tobytes() for o in outs}) > 1
  with pytest.raises(ValueError, match='magnitude'):
    randaugment.randaugment(image, tf.constant([0, 0]), magnitude=11)


def test_random_resized_crop_and_center_crop():
  data = _jpeg()
  a = imagenet.random_resized_crop(data, tf.constant([0, 1], tf.int64), image_size=16)
  b = imagenet.random_resized_crop(data, tf.constant([0, 1], tf.int64), image_size=16)
  c = imagenet.random_resized_crop(data, tf.constant([0, 2], tf.int64), image_size=16)
  assert a.shape == (16, 16, 3)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert float(tf.reduce_min(a)) >= 0 and float(tf.reduce_max(a)) <= 255
  # Centre crop of a flat image with a bright centre square stays bright in the middle.
  flat = np.zeros((64, 96, 3), np.uint8)
  flat[24:40, 40:56] = 255   # 16x16 in the middle; the crop is the middle 32x32
  center = imagenet.center_crop(tf.io.encode_png(flat), image_size=8, crop_padding=8)
  assert center.shape == (8, 8, 3)
  assert float(center[4, 4, 0]) > 200 and float(center[0, 0, 0]) < 60


def test_mixup_and_cutmix_conserve_label_mass_and_pixels():
  rng = np.random.default_rng(0)
  images = tf.constant(rng.uniform(0, 255, (4, 12, 12, 3)).astype(np.float32))
  targets = tf.one_hot([0, 1, 2, 3], 5)
  seed = tf.constant([3, 4], tf.int64)
  for fn, alpha in ((imagenet.mixup, 0.2), (imagenet.cutmix, 1.0)):
    x, y = fn(images, targets, seed, alpha=alpha)
    x2, y2 = fn(images, targets, seed, alpha=alpha)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_allclose(tf.reduce_sum(y, -1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(y[:, :4] + tf.reverse(y, [0])[:, :4],
                               targets[:, :4] + tf.reverse(targets, [0])[:, :4], atol=1e-6)
  # CutMix pixels come from the image itself or its partner, and the label weight of the
  # partner equals the pasted area.
  x, y = imagenet.cutmix(images, targets, seed, alpha=1.0)
  from_partner = np.all(np.asarray(x) == np.asarray(tf.reverse(images, [0])), -1)
  from_self = np.all(np.asarray(x) == np.asarray(images), -1)
  assert np.all(from_partner | from_self)
  np.testing.assert_allclose(from_partner[0].mean(), float(y[0, 3]), atol=1e-5)
  both_x, both_y = imagenet.mixup_cutmix(images, targets, seed, mixup_alpha=0.2,
                                         cutmix_alpha=1.0)
  assert both_x.shape == images.shape and both_y.shape == targets.shape
