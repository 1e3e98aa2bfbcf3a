"""Kinetics multimodal autoencoding: video + audio + label through one Perceiver IO.

The model is the zoo's `video_autoencoder` (DeepMind's parameter tree, so the released
Kinetics-700 checkpoint evaluates here): video frames and audio in, the label masked out,
and all three reconstructed from a latent bottleneck through output queries.

Training decodes a random subset of the output queries per step (`model.train_image_queries`
pixels and `model.train_audio_queries` audio patches, drawn without replacement from the
step's PRNG key, shared by the batch) and compares them with the targets at the same
indices. Evaluation reconstructs whole clips in one call: the clip is encoded once and
its queries are built, decoded and projected `model.eval_decode_chunk_size` at a time
(DeepMind's demo re-encodes the clip for every chunk of queries instead).

Loss per clip: image_weight * MSE(pixels in [0, 1]) + audio_weight * MSE(samples in
[-1, 1]) + label_weight * softmax cross-entropy(label). Metrics: video PSNR and audio PSNR,
10 log10(1 / MSE) (peak 1 for both), and label top-1.

Configs:
  small (default): 8 frames of 32x32 at 25 fps, 16 kHz audio, 64 latents — a CPU model.
  model.size=published: 16 frames of 224x224 at 25 fps, 48 kHz audio (1920 samples per
    frame, patches of 16), 700 classes; model.num_latents = 784 / 392 / 196 gives the
    88x / 176x / 352x compression models (784 is the released checkpoint).

Data: Kinetics annotation CSVs + video folders (perceiver_agents.data.kinetics; windows of
a clip: data/clips.py):

    perceiver-agents train kinetics_autoencoding --workdir runs/kae \\
        --config.data.train_annotations=kinetics700_2020/train.csv \\
        --config.data.train_videos=kinetics700_2020/train \\
        --config.data.eval_annotations=kinetics700_2020/validate.csv \\
        --config.data.eval_videos=kinetics700_2020/val
    perceiver-agents predict kinetics_autoencoding --checkpoint runs/kae VIDEO --out DIR
    perceiver-agents predict kinetics_autoencoding --checkpoint video_autoencoding_checkpoint.pystate VIDEO --out DIR

`predict` writes DIR/reconstruction.mp4 (video + audio), DIR/reconstruction.wav,
DIR/original.wav, DIR/frames/frame_XXX.png (original | reconstruction side by side) and
DIR/prediction.json (PSNRs, top-5 labels).
"""

import argparse
import json
import os
import sys
from typing import Optional

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from perceiver_agents import zoo
from perceiver_agents.blocks import chunking
from perceiver_agents.data import clips
from perceiver_agents.data import kinetics as kinetics_data
from perceiver_agents.data import media
from perceiver_agents.learner.config import default_config
from perceiver_agents.tasks import workdir as workdir_lib
from perceiver_agents.tasks.base import CommandArgs, Task, make_config

PUBLISHED_LATENTS = {784: '88x', 392: '176x', 196: '352x'}


# The small variant (--config.preset=local, tasks/base.py): trains end to end in under a
# minute on 2 CPU cores.
PRESETS = {'local': (
    'model.num_frames=4', 'model.image_size=16', 'model.num_latents=8',
    'model.num_latent_channels=16', 'model.num_self_attends_per_block=1',
    'model.num_self_attend_heads=2', 'model.decoder_num_channels=16',
    'model.audio_num_bands=4', 'model.image_num_bands=2', 'model.train_image_queries=64',
    'model.train_audio_queries=8', 'model.eval_decode_chunk_size=300',
    'data.eval_max_clips=16', 'train.batch_size=2', 'eval.batch_size=2',
    'train.steps=20', 'train.log_every=10', 'eval.every=0', 'checkpoint.every=0')}


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.train.steps = 2000
  config.train.batch_size = 8
  config.train.log_every = 20
  config.eval.every = 500
  config.eval.batch_size = 8
  config.checkpoint.every = 500
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 50
  config.optimizer.weight_decay = 0.0

  m = config.model = ml_collections.ConfigDict()
  m.size = 'small'               # 'small' (the fields below) or 'published' (the zoo's).
  m.num_frames = 8
  m.image_size = 32
  m.samples_per_patch = 16
  m.num_classes = 0              # 0: the number of classes in the annotations.
  m.num_latents = 0              # Encoder z_index_dim; 0: the preset's (small 64,
                                 # published 784; 392 / 196 are the 176x / 352x models).
  m.num_latent_channels = 128
  m.num_self_attends_per_block = 2
  m.num_self_attend_heads = 4
  m.audio_num_bands = 16
  m.image_num_bands = 8
  m.image_spatial_downsample = 4
  m.decoder_num_channels = 128
  m.train_image_queries = 1024   # Pixels decoded per training step (random subset).
  m.train_audio_queries = 64     # Audio patches decoded per training step.
  m.eval_decode_chunk_size = 16384  # Whole-clip eval decodes this many queries at a
                                    # time (memory: one chunk's queries and outputs).
  m.image_weight = 1.0
  m.audio_weight = 1.0
  m.label_weight = 0.01

  d = config.data = ml_collections.ConfigDict()
  d.train_annotations = ''       # Kinetics CSV (youtube_id, time_start, time_end, label).
  d.train_videos = ''            # Folder of the train clips' video files.
  d.eval_annotations = ''
  d.eval_videos = ''
  d.classes_file = ''            # One label per line; '': sorted labels of the train CSV.
  d.fps = 25.0                   # Model frame rate; videos are re-timed to it.
  d.sample_rate = 16000          # Model audio rate (published: 48000); audio resampled.
  d.resample_audio = True        # False: a file at another rate is an error.
  d.pad_short = False            # Clips shorter than the window: error, or pad (True).
  d.silent_if_no_audio = False   # Clips without audio: error, or silence (True).
  d.random_start = True          # Training windows start at a random frame.
  d.eval_max_clips = 0           # 0: all.
  d.cache_size = 16              # Decoded clips kept in memory (each: all its frames at
                                 # fps x size^2 x 3 bytes; 10 s at 224: 37 MB); keep it at
                                 # least the batch size so a batch decodes each clip once.
  return config


def model_kwargs(config: ml_collections.ConfigDict, num_classes: Optional[int]) -> dict:
  """The zoo.video_autoencoder kwargs of `config` (small fields or the published ones);
  num_classes None: only the clip window matters (the class count is left unchecked)."""
  m, d = config.model, config.data
  if m.size == 'published':
    kwargs = dict(zoo.PUBLISHED['video_autoencoder'][1])
    kwargs['encoder'] = dict(kwargs['encoder'],
                             z_index_dim=m.num_latents or kwargs['encoder']['z_index_dim'])
    if num_classes is not None and num_classes != kwargs['num_classes']:
      raise ValueError(f'model.size=published predicts {kwargs["num_classes"]} classes; '
                       f'the data has {num_classes}.')
    rate = kwargs['audio_samples_per_frame'] * d.fps
    if abs(rate - d.sample_rate) > 1e-6:
      raise ValueError(f'model.size=published needs data.sample_rate={rate:g} at '
                       f'data.fps={d.fps:g}, got {d.sample_rate}.')
    return kwargs
  if m.size != 'small':
    raise ValueError(f"model.size must be 'small' or 'published', got {m.size!r}.")
  per_frame = d.sample_rate / d.fps
  if per_frame != int(per_frame):
    raise ValueError(f'data.sample_rate / data.fps must be a whole number of samples per '
                     f'frame, got {d.sample_rate} / {d.fps} = {per_frame}.')
  return dict(
      num_frames=m.num_frames, image_size=m.image_size,
      audio_samples_per_frame=int(per_frame), samples_per_patch=m.samples_per_patch,
      num_classes=num_classes or 1, audio_num_bands=m.audio_num_bands,
      image_num_bands=m.image_num_bands,
      image_spatial_downsample=m.image_spatial_downsample,
      decoder_num_channels=m.decoder_num_channels,
      encoder=dict(num_self_attends_per_block=m.num_self_attends_per_block, num_blocks=1,
                   z_index_dim=m.num_latents or 64, num_z_channels=m.num_latent_channels,
                   num_self_attend_heads=m.num_self_attend_heads,
                   num_cross_attend_heads=1, cross_attend_widening_factor=1,
                   self_attend_widening_factor=1, dropout_prob=0.0,
                   z_pos_enc_init_scale=0.02, cross_attention_shape_for_attn='kv',
                   use_query_residual=True))


def make_model(kwargs: dict, *, train_image_queries: int, train_audio_queries: int,
               eval_decode_chunk_size: int) -> hk.TransformedWithState:
  """The task model around zoo.video_autoencoder(**kwargs); same parameters.

  apply(params, state, rng, batch, is_training) with batch {'image': [B, T, S, S, 3],
  'audio': [B, T * A, 1]} returns
    training: {'image': [B, n_i, 3], 'audio': [B, n_a * P], 'label': [B, K],
               'image_index': int [n_i], 'audio_index': int [n_a]} — the decoded subset;
    evaluation: {'image': [B, T * S * S, 3], 'audio': [B, T * A], 'label': [B, K]}.
  """
  net = zoo.video_autoencoder(**kwargs)
  if eval_decode_chunk_size is None:
    raise ValueError('model.eval_decode_chunk_size must be a positive int, got None.')
  chunking.check_chunk_size(eval_decode_chunk_size, name='model.eval_decode_chunk_size')
  # The same parameters, decoding whole clips chunk by chunk.
  eval_net = zoo.video_autoencoder(decode_chunk_size=eval_decode_chunk_size, **kwargs)
  t, s = kwargs['num_frames'], kwargs['image_size']
  num_pixels = t * s * s
  num_patches = t * kwargs['audio_samples_per_frame'] // kwargs['samples_per_patch']
  for name, value, total in (('model.train_image_queries', train_image_queries, num_pixels),
                             ('model.train_audio_queries', train_audio_queries,
                              num_patches)):
    if not 1 <= value <= total:
      raise ValueError(f'{name} must be in [1, {total}], got {value}.')

  def init(rng, batch, is_training=True):
    points = {'image': jnp.arange(1), 'audio': jnp.arange(1)}
    return net.init(rng, batch['image'], batch['audio'], points, is_training=is_training)

  def apply(params, state, rng, batch, is_training=False):
    images, audio = batch['image'], batch['audio']
    if is_training:
      rng_image, rng_audio, rng = jax.random.split(rng, 3)
      image_index = jax.random.choice(rng_image, num_pixels, (train_image_queries,),
                                      replace=False)
      audio_index = jax.random.choice(rng_audio, num_patches, (train_audio_queries,),
                                      replace=False)
      out, state = net.apply(params, state, rng, images, audio,
                             {'image': image_index, 'audio': audio_index},
                             is_training=True)
      return dict(out, image_index=image_index, audio_index=audio_index), state
    # Every query, placed as subsampled queries are (the positions training saw: the
    # published decoder puts subsampled points at -1 + 2 i / n, the full grid at
    # linspace(-1, 1)); encoded once, decoded chunk by chunk.
    every = {'image': jnp.arange(num_pixels), 'audio': jnp.arange(num_patches)}
    return eval_net.apply(params, state, rng, images, audio, every, is_training=False)

  return hk.TransformedWithState(init=init, apply=apply)


def targets(outputs: dict, batch: dict, samples_per_patch: int) -> tuple:
  """(image [B, n_i, 3], audio [B, n_a * P]) targets at the outputs' query indices."""
  b = batch['image'].shape[0]
  image = batch['image'].reshape(b, -1, 3)
  audio = batch['audio'].reshape(b, -1)
  if 'image_index' in outputs:
    image = image[:, outputs['image_index']]
    patches = audio.reshape(b, -1, samples_per_patch)[:, outputs['audio_index']]
    audio = patches.reshape(b, -1)
  return image, audio


def psnr(mse: jax.Array) -> jax.Array:
  """10 log10(1 / mse) for signals of peak 1; [B] -> [B]."""
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def _read_classes(path: str) -> list[str]:
  if not os.path.isfile(path):
    raise ValueError(f'data.classes_file: {path} does not exist.')
  with open(path) as f:
    names = [line.strip() for line in f if line.strip()]
  if not names:
    raise ValueError(f'data.classes_file: {path} lists no classes.')
  return names


def _source(config, split: str, classes) -> kinetics_data.KineticsSource:
  d, kwargs = config.data, model_kwargs(config, num_classes=None)
  annotations, videos = d[f'{split}_annotations'], d[f'{split}_videos']
  for field, value in ((f'data.{split}_annotations', annotations),
                       (f'data.{split}_videos', videos)):
    if not value:
      raise ValueError(f'{field} is not set: give the Kinetics CSV and video folder, '
                       f'e.g. --config.{field}=PATH.')
  return kinetics_data.KineticsSource(
      annotations=annotations, video_root=videos, classes=classes,
      num_frames=kwargs['num_frames'], fps=d.fps, image_size=kwargs['image_size'],
      sample_rate=d.sample_rate, audio_samples_per_frame=kwargs['audio_samples_per_frame'],
      pad_short=d.pad_short, silent_if_no_audio=d.silent_if_no_audio,
      resample_audio=d.resample_audio, cache_size=d.cache_size)


def build(config: ml_collections.ConfigDict) -> Task:
  m, d = config.model, config.data
  classes = _read_classes(d.classes_file) if d.classes_file else None
  train = _source(config, 'train', classes)
  classes = train.classes
  evaluation = _source(config, 'eval', classes)
  num_classes = m.num_classes or len(classes)
  if num_classes < len(classes):
    raise ValueError(f'model.num_classes ({num_classes}) is smaller than the '
                     f'{len(classes)} classes of the data.')
  kwargs = model_kwargs(config, num_classes)
  spp = kwargs['samples_per_patch']
  model = make_model(kwargs, train_image_queries=m.train_image_queries,
                     train_audio_queries=m.train_audio_queries,
                     eval_decode_chunk_size=m.eval_decode_chunk_size)

  def errors(outputs, batch):
    image, audio = targets(outputs, batch, spp)
    image_mse = jnp.mean(jnp.square(outputs['image'] - image), axis=(1, 2))
    audio_mse = jnp.mean(jnp.square(outputs['audio'] - audio), axis=1)
    return image_mse, audio_mse

  def loss(outputs, batch):
    image_mse, audio_mse = errors(outputs, batch)
    labels = jax.nn.one_hot(batch['label'], num_classes)  # label -1 (unknown): zeros.
    xent = optax.softmax_cross_entropy(outputs['label'], labels)
    return m.image_weight * image_mse + m.audio_weight * audio_mse + m.label_weight * xent

  def metrics(outputs, batch):
    image_mse, audio_mse = errors(outputs, batch)
    top1 = jnp.argmax(outputs['label'], -1) == batch['label']
    return {'video_psnr': psnr(image_mse), 'audio_psnr': psnr(audio_mse),
            'label_top1': top1.astype(jnp.float32)}

  def train_batch(step: int) -> dict:
    return kinetics_data.train_batch(train, seed=config.seed, step=step,
                                     batch_size=config.train.batch_size,
                                     random_start=d.random_start)

  def eval_batches(size: int):
    return kinetics_data.eval_batches(evaluation, batch_size=size,
                                      max_clips=d.eval_max_clips)

  return Task(model=model, loss=loss, metrics=metrics, train_batch=train_batch,
              eval_batches=eval_batches)


# ---------------------------------------------------------------------------------------
# perceiver-agents predict kinetics_autoencoding --checkpoint PATH VIDEO --out DIR


def _load_params(path: str, model, config, kwargs, sample) -> tuple:
  if os.path.isdir(path):
    return workdir_lib.restore(model, config, path, sample)
  if not os.path.isfile(path):
    raise ValueError(f'--checkpoint: {path} is neither a workdir nor a params file.')
  if path.endswith('.npz'):
    from perceiver_agents import params_io  # pylint: disable=g-import-not-at-top
    loaded = params_io.load_params(path)
    return loaded.params, loaded.state
  tree = zoo.load_checkpoint(path)
  if 'params' in tree and 'state' in tree:
    return tree['params'], tree['state']
  return tree, {}


def predict(command: CommandArgs) -> int:
  parser = argparse.ArgumentParser(
      prog='perceiver-agents predict kinetics_autoencoding',
      description='Reconstruct the first window of VIDEO with a trained autoencoder.')
  parser.add_argument('video', help='a video file (with or without audio)')
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument('--start', type=float, default=0.0, help='window start in seconds')
  parser.add_argument('--classes', default='', help='class names file (one per line)')
  known = parser.parse_args(command.args)
  # A training workdir, or a params file (.pystate released by DeepMind, or .npz from
  # params_io); a params file implies model.size=published unless --config says otherwise.
  checkpoint = command.require_checkpoint()
  overrides = list(command.overrides)
  module = sys.modules[__name__]
  if os.path.isdir(checkpoint):
    config = workdir_lib.run_config(module, checkpoint, overrides)
  else:
    config = make_config(module, ['model.size=published', 'data.sample_rate=48000'] +
                         overrides)
  classes = _read_classes(known.classes or config.data.classes_file) if (
      known.classes or config.data.classes_file) else None
  if classes is None and config.data.train_annotations and os.path.exists(
      config.data.train_annotations):
    classes = sorted({c.label for c in kinetics_data.read_annotations(
        config.data.train_annotations) if c.label})
  num_classes = config.model.num_classes or (len(classes) if classes else 0)
  if config.model.size == 'published':
    num_classes = zoo.PUBLISHED['video_autoencoder'][1]['num_classes']
  if not num_classes:
    raise ValueError('model.num_classes is unknown: pass --classes FILE or '
                     '--config.model.num_classes=K.')
  kwargs = model_kwargs(config, num_classes)
  m, d = config.model, config.data
  model = make_model(kwargs, train_image_queries=m.train_image_queries,
                     train_audio_queries=m.train_audio_queries,
                     eval_decode_chunk_size=m.eval_decode_chunk_size)
  t, s, a = kwargs['num_frames'], kwargs['image_size'], kwargs['audio_samples_per_frame']
  sample = {'image': np.zeros((1, t, s, s, 3), np.float32),
            'audio': np.zeros((1, t * a, 1), np.float32), 'label': np.zeros(1, np.int32)}
  params, state = _load_params(checkpoint, model, config, kwargs, sample)

  frames, audio = clips.decode(
      known.video, fps=d.fps, size=s, sample_rate=d.sample_rate, audio_samples_per_frame=a,
      resample_audio=d.resample_audio, silent_if_no_audio=True, start=known.start,
      max_frames=t)
  window = clips.window(frames, audio, first_frame=0, num_frames=t,
                        audio_samples_per_frame=a, pad_short=d.pad_short, name=known.video)
  audio = window['audio'][:, 0]
  batch = {'image': window['image'][None], 'audio': window['audio'][None],
           'label': np.zeros(1, np.int32)}
  out, _ = jax.jit(lambda p, st, b: model.apply(p, st, jax.random.PRNGKey(0), b,
                                                is_training=False))(params, state, batch)
  out = jax.device_get(out)
  recon = np.clip(out['image'][0].reshape(t, s, s, 3), 0.0, 1.0)
  recon_audio = np.clip(out['audio'][0], -1.0, 1.0)
  write_outputs(known.out, original=batch['image'][0], reconstruction=recon,
                original_audio=audio, reconstructed_audio=recon_audio,
                fps=d.fps, sample_rate=d.sample_rate)
  probs = jax.nn.softmax(out['label'][0])
  top5 = np.argsort(-np.asarray(probs))[:5]
  report = {
      'video': known.video,
      'video_psnr': float(-10 * np.log10(max(np.mean((recon - batch['image'][0]) ** 2),
                                              1e-10))),
      'audio_psnr': float(-10 * np.log10(max(np.mean((recon_audio - audio) ** 2), 1e-10))),
      'top5': [{'class': int(i), 'name': classes[i] if classes and i < len(classes)
                else None, 'probability': float(probs[i])} for i in top5]}
  with open(os.path.join(known.out, 'prediction.json'), 'w') as f:
    json.dump(report, f, indent=2)
  print(json.dumps(report))
  return 0


def write_outputs(out_dir: str, *, original: np.ndarray, reconstruction: np.ndarray,
                  original_audio: np.ndarray, reconstructed_audio: np.ndarray,
                  fps: float, sample_rate: int) -> None:
  """Frames in [0, 1] [T, S, S, 3], audio [S_a]: the reconstruction as video + WAV, and
  side-by-side PNGs (original | reconstruction) per frame."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.join(out_dir, 'frames'), exist_ok=True)
  to_uint8 = lambda x: (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
  recon8 = to_uint8(reconstruction)
  h, w = recon8.shape[1:3]
  even = recon8[:, :h - h % 2, :w - w % 2]
  media.write_video(os.path.join(out_dir, 'reconstruction.mp4'), even,
                    fps=int(round(fps)), audio=reconstructed_audio, sample_rate=sample_rate)
  media.write_wav(os.path.join(out_dir, 'reconstruction.wav'), reconstructed_audio,
                  sample_rate)
  media.write_wav(os.path.join(out_dir, 'original.wav'), original_audio, sample_rate)
  orig8 = to_uint8(original)
  for i, (a, b) in enumerate(zip(orig8, recon8)):
    Image.fromarray(np.concatenate([a, b], axis=1)).save(
        os.path.join(out_dir, 'frames', f'frame_{i:03d}.png'))
