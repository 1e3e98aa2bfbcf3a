"""ImageNet classification with the three published Perceiver IO image models.

model.variant picks the input side (zoo.PUBLISHED['imagenet_<variant>']):
  learned_position_encoding   conv1x1 to 256 channels + learned 1D positions (50,176 tokens)
  fourier_position_encoding   raw pixels + 2D Fourier positions (64 bands)
  conv_preprocessing          conv 7x7/2 + BatchNorm + max-pool/2 -> 56x56, Fourier positions
model.size 'published' is the released configuration (224x224, 1000 classes; load a
released checkpoint with model.init_checkpoint); 'small' keeps every kwarg of the variant
but with the sizes under config.model (for tests and CPU runs).

The training recipe is the published one (data/imagenet.py): random resized crop, flips,
RandAugment (4 layers, magnitude 5), MixUp 0.2 on half of each batch and CutMix 1.0 on the
other half, label smoothing 0.1; LAMB, lr 2e-3 flat for the first half of training then
cosine decay to 0 (optimizer.schedule='flat_cosine'), weight decay 0.1, batch 1024,
110 epochs (train.steps = 110 * 1281167 // 1024 = 137,625 at batch 1024). Evaluation:
centre crop 224 / (224 + 32); metrics top1 and top5.

    perceiver-agents train imagenet --workdir runs/in1k --config.model.size=published \\
        --config.data.data_dir=/data/tfds
    perceiver-agents predict imagenet --checkpoint imagenet_conv_preprocessing.pystate \\
        --config.model.variant=conv_preprocessing --config.model.size=published --eval
    perceiver-agents predict imagenet --checkpoint runs/in1k cat.jpg   # top-5 classes

train_batch(step) is a pure function of (seed, step): the tf.data stream is built from
batch `step` on (see data/imagenet.py for the seek), and kept open while steps follow
one another.
"""

import argparse
import copy
import json
import sys
from typing import Iterator, List

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from perceiver_agents import zoo
from perceiver_agents.data import imagenet as imagenet_data
from perceiver_agents.learner.config import default_config
from perceiver_agents.tasks import pretrained
from perceiver_agents.tasks import workdir as workdir_lib
from perceiver_agents.tasks.base import CommandArgs, Task

VARIANTS = ('learned_position_encoding', 'fourier_position_encoding', 'conv_preprocessing')
TRAIN_EXAMPLES = 1_281_167


# The small variant (--config.preset=local, tasks/base.py): trains end to end in under a
# minute on 2 CPU cores.
PRESETS = {'local': (
    'model.image_size=16', 'model.num_bands=2', 'model.position_channels=8',
    'model.num_latents=4', 'model.num_latent_channels=16', 'model.num_blocks=1',
    'model.num_self_attends_per_block=1', 'model.num_self_attend_heads=2',
    'data.num_eval=64', 'data.shuffle_buffer=8', 'data.randaugment_layers=2',
    'train.batch_size=4', 'eval.batch_size=4', 'train.steps=50',
    'train.log_every=10', 'eval.every=0', 'checkpoint.every=0')}


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.train.batch_size = 1024
  config.train.steps = 110 * TRAIN_EXAMPLES // 1024
  config.train.log_every = 100
  config.eval.every = 5000
  config.eval.batch_size = 256
  config.checkpoint.every = 2000
  config.optimizer.name = 'lamb'
  config.optimizer.learning_rate = 2e-3
  config.optimizer.schedule = 'flat_cosine'
  config.optimizer.warmup_steps = 0
  config.optimizer.weight_decay = 1e-1

  config.model = ml_collections.ConfigDict()
  config.model.variant = 'conv_preprocessing'
  config.model.size = 'small'        # 'small' (sizes below) or 'published'.
  config.model.image_size = 32       # small only; published: 224.
  config.model.num_classes = 1000    # small only; published: 1000.
  config.model.num_bands = 8
  config.model.position_channels = 32  # learned positions / conv1x1 channels.
  config.model.num_latents = 32
  config.model.num_latent_channels = 64
  config.model.num_blocks = 2
  config.model.num_self_attends_per_block = 2
  config.model.num_self_attend_heads = 4
  config.model.init_checkpoint = ''  # Released .pystate or .npz to start from.

  config.data = ml_collections.ConfigDict()
  config.data.name = 'imagenet2012'  # Any TFDS set with 'image' and 'label' features.
  config.data.data_dir = ''          # TFDS data_dir ('' = TFDS default).
  config.data.train_split = 'train'
  config.data.eval_split = 'validation'
  config.data.num_eval = 0           # 0: the whole eval split.
  config.data.randaugment_layers = 4
  config.data.randaugment_magnitude = 5.0
  config.data.mixup_alpha = 0.2
  config.data.cutmix_alpha = 1.0
  config.data.label_smoothing = 0.1
  config.data.shuffle_buffer = 10_000
  config.data.crop_padding = 32
  return config


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
  """Keyword arguments of zoo.imagenet_perceiver for config.model."""
  m = config.model
  if m.variant not in VARIANTS:
    raise ValueError(f'model.variant must be one of {VARIANTS}, got {m.variant!r}.')
  kwargs = copy.deepcopy(zoo.PUBLISHED['imagenet_' + m.variant][1])
  if m.size == 'published':
    return kwargs
  if m.size != 'small':
    raise ValueError(f"model.size must be 'small' or 'published', got {m.size!r}.")
  if m.image_size < 8 or (m.variant == 'conv_preprocessing' and m.image_size % 4):
    raise ValueError(f'model.image_size must be >= 8 (a multiple of 4 for conv), got '
                     f'{m.image_size}.')
  kwargs['num_classes'] = m.num_classes
  prep = kwargs['input_preprocessor']
  if 'fourier_position_encoding_kwargs' in prep:
    grid = m.image_size // 4 if m.variant == 'conv_preprocessing' else m.image_size
    prep['fourier_position_encoding_kwargs'].update(
        num_bands=m.num_bands, max_resolution=(grid, grid))
  if 'trainable_position_encoding_kwargs' in prep:
    prep['trainable_position_encoding_kwargs']['num_channels'] = m.position_channels
    prep.update(project_pos_dim=m.position_channels, num_channels=m.position_channels)
  kwargs['encoder'].update(
      num_blocks=m.num_blocks, num_self_attends_per_block=m.num_self_attends_per_block,
      z_index_dim=m.num_latents, num_z_channels=m.num_latent_channels,
      num_self_attend_heads=m.num_self_attend_heads)
  kwargs['decoder'].update(num_z_channels=m.num_latent_channels)
  kwargs['decoder']['trainable_position_encoding_kwargs']['num_channels'] = (
      m.num_latent_channels)
  return kwargs


def image_size(config: ml_collections.ConfigDict) -> int:
  return 224 if config.model.size == 'published' else config.model.image_size


def build_model(config: ml_collections.ConfigDict) -> hk.TransformedWithState:
  """apply(params, state, rng, batch, is_training) -> logits [B, K]; batch['image']
  float [B, S, S, 3] normalised. BatchNorm statistics (conv variant) are the state."""
  net = zoo.imagenet_perceiver(**model_kwargs(config))
  size = image_size(config)

  def init(rng, batch, is_training=True):
    del batch
    return net.init(rng, jnp.zeros((1, size, size, 3)), is_training=is_training)

  def apply(params, state, rng, batch, is_training=False):
    return net.apply(params, state, rng, batch['image'], is_training=is_training)

  model = hk.TransformedWithState(init=init, apply=apply)
  if config.model.init_checkpoint:
    model = pretrained.start_from(model, config.model.init_checkpoint)
  return model


def make_loss(num_classes: int, label_smoothing: float):
  def loss(logits, batch):
    """Cross-entropy with batch['soft_label'] [B, K] (training) or smoothed one-hot."""
    if 'soft_label' in batch:
      targets = batch['soft_label']
    else:
      targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], num_classes),
                                    label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)
  return loss


def metrics(logits, batch):
  """top1 / top5 accuracy per example [B]."""
  label = batch['label']
  k = min(5, logits.shape[-1])
  top = jax.lax.top_k(logits, k)[1]                                   # [B, k]
  return {'top1': (top[:, 0] == label).astype(jnp.float32),
          'top5': jnp.any(top == label[:, None], axis=-1).astype(jnp.float32)}


class _TrainStream:
  """train_batch(step) over one open tf.data iterator, rebuilt (sought) on any jump."""

  def __init__(self, make_dataset):
    self._make = make_dataset
    self._iterator = None
    self._next = None
    self._last = (None, None)

  def __call__(self, step: int) -> dict:
    if self._last[0] == step:
      return self._last[1]
    if self._iterator is None or step != self._next:
      self._iterator = imagenet_data.as_numpy(self._make(start_step=step))
    batch = next(self._iterator)
    self._next = step + 1
    self._last = (step, batch)
    return batch


def build(config: ml_collections.ConfigDict) -> Task:
  d = config.data
  size = image_size(config)
  num_classes = model_kwargs(config)['num_classes']
  data_dir = d.data_dir or None

  def make_train(start_step: int):
    return imagenet_data.train_dataset(
        name=d.name, split=d.train_split, data_dir=data_dir, seed=config.seed,
        batch_size=config.train.batch_size, image_size=size, start_step=start_step,
        randaugment_layers=d.randaugment_layers,
        randaugment_magnitude=d.randaugment_magnitude, mixup_alpha=d.mixup_alpha,
        cutmix_alpha=d.cutmix_alpha, label_smoothing=d.label_smoothing,
        shuffle_buffer=d.shuffle_buffer)

  def eval_batches(batch_size: int) -> Iterator[dict]:
    return imagenet_data.as_numpy(imagenet_data.eval_dataset(
        name=d.name, split=d.eval_split, data_dir=data_dir, batch_size=batch_size,
        image_size=size, crop_padding=d.crop_padding, num_examples=d.num_eval))

  # Fail early (naming data_dir) if the dataset is missing, not at the first step.
  imagenet_data.check_available(name=d.name, splits=(d.train_split, d.eval_split),
                                data_dir=data_dir, num_classes=num_classes)
  return Task(model=build_model(config), loss=make_loss(num_classes, d.label_smoothing),
              metrics=metrics, train_batch=_TrainStream(make_train), eval_batches=eval_batches)


# ---------------------------------------------------------------------------- predict


def _zero_batch(config: ml_collections.ConfigDict) -> dict:
  """A batch of zeros with the shapes of config's training batches."""
  b, size = config.train.batch_size, image_size(config)
  return {'image': np.zeros((b, size, size, 3), np.float32),
          'label': np.zeros((b,), np.int32),
          'soft_label': np.zeros((b, model_kwargs(config)['num_classes']), np.float32)}


def predict(command: CommandArgs) -> int:
  """`perceiver-agents predict imagenet --checkpoint PATH (--eval | IMAGE ...)`."""
  parser = argparse.ArgumentParser(
      prog='perceiver-agents predict imagenet',
      description='Top-5 classes of images, or --eval: top-1/top-5 over data.eval_split.',
      epilog='PATH: a workdir of `perceiver-agents train imagenet`, or a weights file '
             '(released .pystate with --config.model.size=published and the matching '
             '--config.model.variant, or .npz). Other --config.FIELD=VALUE apply too.')
  parser.add_argument('--eval', action='store_true', help='evaluate on data.eval_split')
  parser.add_argument('images', nargs='*')
  known = parser.parse_args(command.args)
  checkpoint = command.require_checkpoint()
  if not known.eval and not known.images:
    raise ValueError('give image files or --eval.')
  config, params, state = workdir_lib.load_for_predict(
      sys.modules[__name__], 'imagenet', checkpoint, command.overrides, _zero_batch)
  model = build_model(config)
  forward = jax.jit(lambda image: model.apply(params, state, jax.random.PRNGKey(0),
                                              {'image': image}, is_training=False)[0])
  size = image_size(config)
  if known.eval:
    totals, count = {'top1': 0.0, 'top5': 0.0}, 0
    for batch in imagenet_data.as_numpy(imagenet_data.eval_dataset(
        name=config.data.name, split=config.data.eval_split,
        data_dir=config.data.data_dir or None, batch_size=config.eval.batch_size,
        image_size=size, crop_padding=config.data.crop_padding,
        num_examples=config.data.num_eval)):
      values = metrics(forward(batch['image']), batch)
      for k in totals:
        totals[k] += float(np.sum(values[k]))
      count += len(batch['label'])
    print(json.dumps({'split': config.data.eval_split, 'examples': count,
                      **{k: v / max(count, 1) for k, v in totals.items()}}))
    return 0
  for path in known.images:
    try:
      with open(path, 'rb') as f:
        data = f.read()
    except OSError as e:
      raise ValueError(f'{path}: cannot read image ({e.strerror}).') from None
    image = imagenet_data.decode_for_eval(data, image_size=size,
                                          crop_padding=config.data.crop_padding, path=path)
    logits = np.asarray(forward(image[None]))[0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    top = np.argsort(-probs)[:5]
    print(json.dumps({'image': path, 'top5': [[int(c), float(probs[c])] for c in top]}))
  return 0
