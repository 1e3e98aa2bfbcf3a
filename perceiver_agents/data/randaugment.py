"""RandAugment (Cubuk et al., 2020) in TensorFlow ops, stateless: a pure function of a seed.

`randaugment(image, seed, num_layers=4, magnitude=5)` applies `num_layers` operations, each
chosen uniformly from OPS, at a strength of magnitude / 10 of each op's range (with a random
sign for signed ops). image: float32 [H, W, 3] in [0, 255] -> same shape and range.
Geometric ops fill uncovered pixels with grey (128).
"""

from typing import Callable, List

import tensorflow as tf

FILL = 128.0
MAX_LEVEL = 10.0

OPS = ('identity', 'auto_contrast', 'equalize', 'rotate', 'solarize', 'color', 'posterize',
       'contrast', 'brightness', 'sharpness', 'shear_x', 'shear_y', 'translate_x',
       'translate_y')


def _blend(a: tf.Tensor, b: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """a + factor (b - a), clipped to [0, 255] (factor > 1 extrapolates)."""
  return tf.clip_by_value(a + factor * (b - a), 0.0, 255.0)


def _grey(image: tf.Tensor) -> tf.Tensor:
  return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def _affine(image: tf.Tensor, matrix: List[tf.Tensor]) -> tf.Tensor:
  """Output pixel (x, y) samples input at (a0 x + a1 y + a2, b0 x + b1 y + b2)."""
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  transform = tf.cast(tf.stack(matrix + [0.0, 0.0]), tf.float32)[None]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform, output_shape=tf.stack([h, w]),
      fill_value=FILL, interpolation='BILINEAR', fill_mode='CONSTANT')
  return out[0]


def auto_contrast(image, level, sign):
  del level, sign
  lo = tf.reduce_min(image, axis=[0, 1], keepdims=True)
  hi = tf.reduce_max(image, axis=[0, 1], keepdims=True)
  scaled = (image - lo) * 255.0 / tf.maximum(hi - lo, 1e-3)
  return tf.where(hi > lo, scaled, image)


def equalize(image, level, sign):
  """Histogram equalisation of each channel (as PIL's ImageOps.equalize)."""
  del level, sign
  pixels = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.int32)   # [H, W, 3]
  channels = []
  for c in range(3):
    values = pixels[..., c]
    hist = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256,
                            dtype=tf.float32)
    last = tf.gather(hist, tf.reduce_max(tf.where(hist > 0)))
    step = (tf.reduce_sum(hist) - last) / 255.0
    lut = (tf.cumsum(hist) - hist + step / 2.0) / tf.maximum(step, 1e-6)
    lut = tf.clip_by_value(tf.floor(lut), 0.0, 255.0)
    channels.append(tf.where(step > 0, tf.gather(lut, values), tf.cast(values, tf.float32)))
  return tf.stack(channels, -1)


def rotate(image, level, sign):
  angle = sign * level / MAX_LEVEL * 30.0 * 3.141592653589793 / 180.0
  h = tf.cast(tf.shape(image)[0], tf.float32)
  w = tf.cast(tf.shape(image)[1], tf.float32)
  cx, cy = (w - 1) / 2, (h - 1) / 2
  c, s = tf.cos(angle), tf.sin(angle)
  return _affine(image, [c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy])


def solarize(image, level, sign):
  del sign
  threshold = 256.0 - level / MAX_LEVEL * 256.0
  return tf.where(image >= threshold, 255.0 - image, image)


def color(image, level, sign):
  return _blend(_grey(image), image, 1.0 + sign * level / MAX_LEVEL * 0.9)


def posterize(image, level, sign):
  del sign
  bits = 8 - tf.cast(level / MAX_LEVEL * 4.0, tf.int32)
  shift = 8 - bits
  pixels = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.int32)
  return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(pixels, shift), shift), tf.float32)


def contrast(image, level, sign):
  mean = tf.reduce_mean(tf.image.rgb_to_grayscale(image))
  return _blend(tf.fill(tf.shape(image), mean), image, 1.0 + sign * level / MAX_LEVEL * 0.9)


def brightness(image, level, sign):
  return _blend(tf.zeros_like(image), image, 1.0 + sign * level / MAX_LEVEL * 0.9)


def sharpness(image, level, sign):
  kernel = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], 'SAME')[0]
  # Borders keep their original values (as PIL does).
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  interior = tf.pad(tf.ones([h - 2, w - 2, 3]), [[1, 1], [1, 1], [0, 0]])
  smooth = interior * smooth + (1 - interior) * image
  return _blend(smooth, image, 1.0 + sign * level / MAX_LEVEL * 0.9)


def shear_x(image, level, sign):
  return _affine(image, [1.0, sign * level / MAX_LEVEL * 0.3, 0.0, 0.0, 1.0, 0.0])


def shear_y(image, level, sign):
  return _affine(image, [1.0, 0.0, 0.0, sign * level / MAX_LEVEL * 0.3, 1.0, 0.0])


def translate_x(image, level, sign):
  dx = sign * level / MAX_LEVEL * 0.45 * tf.cast(tf.shape(image)[1], tf.float32)
  return _affine(image, [1.0, 0.0, dx, 0.0, 1.0, 0.0])


def translate_y(image, level, sign):
  dy = sign * level / MAX_LEVEL * 0.45 * tf.cast(tf.shape(image)[0], tf.float32)
  return _affine(image, [1.0, 0.0, 0.0, 0.0, 1.0, dy])


def identity(image, level, sign):
  del level, sign
  return image


def op(name: str) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]:
  """The function (image, level, sign) -> image of op `name`."""
  if name not in OPS:
    raise ValueError(f'op name must be one of {OPS}, got {name!r}.')
  return globals()[name]


def randaugment(image: tf.Tensor, seed: tf.Tensor, *, num_layers: int = 4,
                magnitude: float = 5.0) -> tf.Tensor:
  """RandAugment of image float32 [H, W, 3] in [0, 255], from seed int [2]."""
  if num_layers < 0:
    raise ValueError(f'num_layers must be >= 0, got {num_layers}.')
  if not 0 <= magnitude <= MAX_LEVEL:
    raise ValueError(f'magnitude must be in [0, {MAX_LEVEL}], got {magnitude}.')
  image = tf.convert_to_tensor(image, tf.float32)
  level = tf.constant(float(magnitude))
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num_layers)
  for i in range(num_layers):
    which, flip = tf.unstack(tf.random.experimental.stateless_split(seeds[i], 2))
    index = tf.random.stateless_uniform([], which, 0, len(OPS), dtype=tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], flip) < 0.5, -1.0, 1.0)
    branches = [lambda f=op(name): f(image, level, sign) for name in OPS]
    image = tf.ensure_shape(tf.switch_case(index, branches), image.shape)
  return tf.clip_by_value(image, 0.0, 255.0)
