"""ImageNet input pipelines on TFDS `imagenet2012` (or any TFDS image-classification set).

Training (the Perceiver / Perceiver IO recipe):
  random resized crop (Inception-style: 8%-100% of the area, aspect 3/4-4/3) to
  image_size, left-right flip, RandAugment (4 layers, magnitude 5), then per batch MixUp
  (alpha 0.2) on the first half and CutMix (alpha 1.0) on the second half, on label-
  smoothed (0.1) one-hot targets.
Evaluation: centre crop of image_size / (image_size + 32) of the shorter side, resized to
  image_size. Images are normalised with the ImageNet mean and standard deviation.

Determinism and resume. Every random choice is a stateless TF op seeded by (seed, global
example position) or (seed, batch index), never by op state. Epoch e reads the split in
TFDS's fixed file order through a shuffle buffer seeded by (seed, e). The stream is thus a
pure function of `seed`; `train_dataset(start_step=s)` starts it at batch s by building
epoch s*B // N and skipping the remaining (s*B) mod N records *before* decoding (at most one
epoch of reads, no image work), which is how `train_batch(step)` resumes exactly.
"""

from typing import Iterator, Optional

import numpy as np

from perceiver_agents.data import tfds_util

MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def normalize(image):
  """[..., 3] in [0, 255] -> (image - mean) / std, float32."""
  tf = _tf()
  return (tf.cast(image, tf.float32) - MEAN_RGB) / STDDEV_RGB


def random_resized_crop(image_bytes, seed, *, image_size: int,
                        area_range=(0.08, 1.0), aspect_range=(3 / 4, 4 / 3)):
  """Inception crop of an encoded image -> float32 [image_size, image_size, 3] in [0, 255]."""
  tf = _tf()
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
      seed=seed, min_object_covered=0.1, aspect_ratio_range=aspect_range, area_range=area_range,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  crop = tf.slice(image, begin, size)
  return tf.clip_by_value(tf.image.resize(tf.cast(crop, tf.float32), [image_size, image_size],
                                          method='bicubic', antialias=True), 0.0, 255.0)


def center_crop(image_bytes, *, image_size: int, crop_padding: int = 32):
  """Centre crop image_size / (image_size + crop_padding) of the shorter side, resized to
  image_size -> float32 [image_size, image_size, 3] in [0, 255]."""
  tf = _tf()
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  side = tf.cast(tf.round(image_size / (image_size + crop_padding) *
                          tf.cast(tf.minimum(h, w), tf.float32)), tf.int32)
  side = tf.maximum(side, 1)
  top, left = (h - side + 1) // 2, (w - side + 1) // 2
  crop = image[top:top + side, left:left + side]
  return tf.clip_by_value(tf.image.resize(tf.cast(crop, tf.float32), [image_size, image_size],
                                          method='bicubic', antialias=True), 0.0, 255.0)


def _beta(seed, alpha: float, shape=()):
  tf = _tf()
  a, b = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  x = tf.random.stateless_gamma(shape, a, alpha=alpha)
  y = tf.random.stateless_gamma(shape, b, alpha=alpha)
  return x / tf.maximum(x + y, 1e-12)


def mixup(images, targets, seed, *, alpha: float):
  """Mixes each example with the batch reversed: weight lam ~ Beta(alpha, alpha) per batch.

  images [B, H, W, C], targets [B, K] -> same shapes."""
  tf = _tf()
  lam = _beta(seed, alpha)
  return (lam * images + (1 - lam) * tf.reverse(images, [0]),
          lam * targets + (1 - lam) * tf.reverse(targets, [0]))


def cutmix(images, targets, seed, *, alpha: float):
  """Pastes one box of the reversed batch into every image; targets mix by box area.

  The box has area fraction 1 - lam, lam ~ Beta(alpha, alpha), at a uniform random centre
  (clipped to the image); images [B, H, W, C], targets [B, K] -> same shapes."""
  tf = _tf()
  s_lam, s_y, s_x = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  lam = _beta(s_lam, alpha)
  h, w = tf.shape(images)[1], tf.shape(images)[2]
  hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
  cut = tf.sqrt(1.0 - lam)
  cy = tf.random.stateless_uniform([], s_y, 0.0, hf)
  cx = tf.random.stateless_uniform([], s_x, 0.0, wf)
  y0 = tf.cast(tf.clip_by_value(tf.round(cy - cut * hf / 2), 0, hf), tf.int32)
  y1 = tf.cast(tf.clip_by_value(tf.round(cy + cut * hf / 2), 0, hf), tf.int32)
  x0 = tf.cast(tf.clip_by_value(tf.round(cx - cut * wf / 2), 0, wf), tf.int32)
  x1 = tf.cast(tf.clip_by_value(tf.round(cx + cut * wf / 2), 0, wf), tf.int32)
  rows, cols = tf.range(h)[:, None], tf.range(w)[None, :]
  box = tf.cast((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1), images.dtype)
  box = box[None, :, :, None]
  kept = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / (hf * wf)
  return (images * (1 - box) + tf.reverse(images, [0]) * box,
          kept * targets + (1 - kept) * tf.reverse(targets, [0]))


def mixup_cutmix(images, targets, seed, *, mixup_alpha: float, cutmix_alpha: float):
  """MixUp on the first half of the batch, CutMix on the second (either may be off: 0)."""
  tf = _tf()
  s_mix, s_cut = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  n = tf.shape(images)[0] // 2 if (mixup_alpha > 0 and cutmix_alpha > 0) else None
  if n is None:
    if mixup_alpha > 0:
      return mixup(images, targets, s_mix, alpha=mixup_alpha)
    if cutmix_alpha > 0:
      return cutmix(images, targets, s_cut, alpha=cutmix_alpha)
    return images, targets
  a_img, a_tgt = mixup(images[:n], targets[:n], s_mix, alpha=mixup_alpha)
  b_img, b_tgt = cutmix(images[n:], targets[n:], s_cut, alpha=cutmix_alpha)
  return tf.concat([a_img, b_img], 0), tf.concat([a_tgt, b_tgt], 0)


def _records(*, name: str, split: str, data_dir: Optional[str]):
  """(dataset of {'image': encoded bytes, 'label'}, num_examples, num_classes)."""
  tf = _tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f'--config.data.name: {name!r} is not a TFDS dataset.') from None
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={'image': tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(shuffle_seed=0))
  except (AssertionError, FileNotFoundError, tf.errors.NotFoundError):
    raise ValueError(tfds_util.not_prepared_message(
        name, data_dir=data_dir, flag='data.data_dir',
        manual_instructions=getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None) or ''
    )) from None
  except ValueError as e:  # E.g. a split the prepared dataset does not have.
    raise ValueError(f'--config.data.data_dir: TFDS dataset {name!r} split {split!r}: '
                     f'{str(e).strip().splitlines()[0][:200]}') from None
  num_classes = builder.info.features['label'].num_classes
  try:
    num_examples = builder.info.splits[split].num_examples
  except KeyError:  # No split metadata (e.g. tfds.testing.mock_data): count the records.
    num_examples = int(ds.cardinality())
    if num_examples < 0:
      num_examples = int(ds.reduce(0, lambda n, _: n + 1))
  ds = ds.map(lambda x: {'image': x['image'], 'label': tf.cast(x['label'], tf.int32)})
  return ds, int(num_examples), int(num_classes)


def train_dataset(*, name: str = 'imagenet2012', split: str = 'train',
                  data_dir: Optional[str] = None, seed: int, batch_size: int,
                  image_size: int, start_step: int = 0, num_epochs: Optional[int] = None,
                  randaugment_layers: int = 4, randaugment_magnitude: float = 5.0,
                  mixup_alpha: float = 0.2, cutmix_alpha: float = 1.0,
                  label_smoothing: float = 0.1, shuffle_buffer: int = 10_000,
                  area_range=(0.08, 1.0)):
  """Batches {'image': float32 [B, S, S, 3] normalised, 'label': int32 [B] (the dominant
  class), 'soft_label': float32 [B, K] (smoothed, mixed)} from batch `start_step` on."""
  tf = _tf()
  from perceiver_agents.data import randaugment  # pylint: disable=g-import-not-at-top
  records, num_examples, num_classes = _records(name=name, split=split, data_dir=data_dir)
  if num_examples < 1:
    raise ValueError(f'data: split {split!r} of {name!r} is empty.')
  first = start_step * batch_size
  epoch0, offset = divmod(first, num_examples)
  last_epoch = epoch0 + num_epochs if num_epochs is not None else np.iinfo(np.int64).max

  def epoch(e):
    """Epoch e in its own seeded order; the first one skips to `offset` (no decoding)."""
    shuffled = records.shuffle(shuffle_buffer, seed=seed * 1_000_003 + e,
                               reshuffle_each_iteration=False)
    return shuffled.skip(tf.where(e == epoch0, tf.constant(offset, tf.int64), 0))

  def augment(position, example):
    key = tf.stack([tf.constant(seed, tf.int64), position])
    crop_seed, flip_seed, ra_seed = tf.unstack(tf.random.experimental.stateless_split(key, 3))
    image = random_resized_crop(example['image'], crop_seed, image_size=image_size,
                                area_range=area_range)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if randaugment_layers:
      image = randaugment.randaugment(image, ra_seed, num_layers=randaugment_layers,
                                      magnitude=randaugment_magnitude)
    target = tf.one_hot(example['label'], num_classes)
    target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
    return {'image': image, 'target': target, 'position': position}

  def mix(batch):
    step = batch['position'][0] // batch_size
    key = tf.stack([tf.constant(seed, tf.int64), step + (1 << 40)])
    images, targets = mixup_cutmix(batch['image'], batch['target'], key,
                                   mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)
    return {'image': normalize(images), 'label': tf.cast(tf.argmax(targets, -1), tf.int32),
            'soft_label': targets}

  ds = tf.data.Dataset.range(epoch0, last_epoch).flat_map(epoch).enumerate(start=first)
  ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True).map(mix)
  return ds.prefetch(2)


def eval_dataset(*, name: str = 'imagenet2012', split: str = 'validation',
                 data_dir: Optional[str] = None, batch_size: int, image_size: int,
                 crop_padding: int = 32, num_examples: int = 0):
  """Batches {'image': float32 [b, S, S, 3] normalised, 'label': int32 [b]} in file order;
  the last batch may be short. num_examples > 0 keeps only the first num_examples."""
  tf = _tf()
  records, _, _ = _records(name=name, split=split, data_dir=data_dir)
  if num_examples > 0:
    records = records.take(num_examples)

  def prepare(example):
    image = center_crop(example['image'], image_size=image_size, crop_padding=crop_padding)
    return {'image': normalize(image), 'label': example['label']}

  return records.map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True).batch(batch_size).prefetch(2)


def as_numpy(ds) -> Iterator[dict]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return iter(tfds.as_numpy(ds))


def check_available(*, name: str, splits, data_dir: Optional[str], num_classes: int) -> None:
  """Raises ValueError naming data_dir if a split is missing or the class count differs."""
  for split in splits:
    _, _, classes = _records(name=name, split=split, data_dir=data_dir)
    if classes != num_classes:
      raise ValueError(f'data.name: {name!r} has {classes} classes, the model '
                       f'{num_classes} (set model.num_classes).')


def decode_for_eval(image_bytes: bytes, *, image_size: int, crop_padding: int = 32,
                    path: str = 'image') -> np.ndarray:
  """An encoded image file -> the eval input float32 [S, S, 3] (centre crop, normalised)."""
  tf = _tf()
  try:
    image = center_crop(tf.constant(image_bytes), image_size=image_size,
                        crop_padding=crop_padding)
  except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
    raise ValueError(f'{path}: not a decodable image ({e.message.splitlines()[0]}).') from None
  return normalize(image).numpy()
