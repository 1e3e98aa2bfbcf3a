"""AudioSet: multi-label classification (527 classes) with a Perceiver IO classifier.

Inputs, as in the Perceiver paper's two AudioSet variants, optionally with video:
  model.input='raw_audio'  raw waveform [S] cut into patches of model.samples_per_patch
                           samples, 1-D Fourier positions over the patch index;
  model.input='log_mel'    log-mel spectrogram [F, M] (data.audio_features: 25 ms Hann
                           windows every 10 ms, model.num_mels HTK bands, log(power + 1e-6)),
                           cut into model.mel_patch x model.mel_patch patches with 2-D
                           Fourier positions;
  model.with_video=True    adds frames [T, S, S, 3] at data.fps in space-time patches
                           (MultimodalPreprocessor; modalities padded to one width).
Encoder: PerceiverEncoder (cross-attend into model.num_latents latents, then
self-attention); decoder: one trainable query -> ClassificationDecoder -> 527 logits.
Loss: sigmoid cross-entropy, averaged over classes. Training batches are class-balanced
(data.balanced) and windows start at a random time.

Metrics: the learner reports per-example `top1_precision` (is the best-scoring class a
positive) and `lrap` (label-ranking average precision). The set-level metrics — mAP (mean
over classes of average precision), mAUC and d-prime = sqrt(2) Phi^-1(mAUC) — need all
eval predictions at once: `predict` computes them.

    perceiver-agents train audioset --workdir runs/as \\
        --config.data.train_segments=balanced_train_segments.csv \\
        --config.data.eval_segments=eval_segments.csv \\
        --config.data.class_labels=class_labels_indices.csv \\
        --config.data.audio_root=audioset/audio [--config.model.input=log_mel]
    perceiver-agents predict audioset --checkpoint runs/as [--out report.json]  # mAP, d'
    perceiver-agents predict audioset --checkpoint runs/as clip1.wav clip2.mp4  # top-5

The defaults are a small CPU model on 1 s of 16 kHz audio; the paper's models use 48 kHz
audio and far larger encoders (set the model.* and data.* fields accordingly).
"""

import argparse
import functools
import json
import sys

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from perceiver_agents.blocks import ClassificationDecoder, Perceiver, PerceiverEncoder
from perceiver_agents.data import audio_features
from perceiver_agents.data import audioset as audioset_data
from perceiver_agents.data import media
from perceiver_agents.data import sampling
from perceiver_agents.encoders.audio import AudioPreprocessor
from perceiver_agents.encoders.image import ImagePreprocessor
from perceiver_agents.encoders.multimodal import MultimodalPreprocessor
from perceiver_agents.learner.config import default_config
from perceiver_agents.tasks import multilabel_metrics
from perceiver_agents.tasks import workdir as workdir_lib
from perceiver_agents.tasks.base import CommandArgs, Task

INPUTS = ('raw_audio', 'log_mel')


# The small variant (--config.preset=local, tasks/base.py): trains end to end in under a
# minute on 2 CPU cores.
PRESETS = {'local': (
    'model.num_latents=8', 'model.num_latent_channels=16',
    'model.num_self_attends_per_block=1', 'model.num_self_attend_heads=2',
    'model.num_bands=2', 'model.num_mels=16', 'model.image_size=16',
    'data.clip_seconds=0.256', 'data.eval_max_segments=64', 'train.batch_size=2',
    'eval.batch_size=4', 'train.steps=50',
    'train.log_every=10', 'eval.every=0', 'checkpoint.every=0')}


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.train.steps = 2000
  config.train.batch_size = 16
  config.train.log_every = 20
  config.eval.every = 500
  config.eval.batch_size = 16
  config.checkpoint.every = 500
  config.optimizer.name = 'adamw'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 50
  config.optimizer.weight_decay = 1e-4

  m = config.model = ml_collections.ConfigDict()
  m.input = 'raw_audio'          # 'raw_audio' or 'log_mel'.
  m.with_video = False           # Also read frames (data.video_root).
  m.samples_per_patch = 128      # raw_audio: samples per input token.
  m.num_mels = 64                # log_mel: mel bands (the usual front end uses 128).
  m.mel_patch = 4                # log_mel: square patches of frames x bands.
  m.num_frames = 4               # with_video: frames per window, at data.fps.
  m.image_size = 32
  m.image_patch = 8              # with_video: spatial patch size.
  m.num_bands = 16               # Fourier position bands.
  m.num_latents = 64
  m.num_latent_channels = 128
  m.num_self_attends_per_block = 2
  m.num_blocks = 1
  m.num_self_attend_heads = 4
  m.num_cross_attend_heads = 1
  m.dropout = 0.0

  d = config.data = ml_collections.ConfigDict()
  d.train_segments = ''          # e.g. balanced_train_segments.csv
  d.eval_segments = ''           # e.g. eval_segments.csv
  d.class_labels = ''            # class_labels_indices.csv
  d.audio_root = ''              # Folder of <YTID>.wav (or .flac, .mp4, ...) files.
  d.video_root = ''              # with_video: folder of <YTID>.mp4 (etc.) files.
  d.clip_seconds = 1.0           # Window length (the paper's raw-audio windows: 1.28 s).
  d.sample_rate = 16000          # Model audio rate; files are resampled to it.
  d.resample_audio = True        # False: a file at another rate is an error.
  d.fps = 4.0                    # with_video: frame rate; num_frames / fps ~ clip_seconds.
  d.pad_short = False            # Files shorter than the window: error, or pad (True).
  d.balanced = True              # Class-balanced training batches.
  d.random_start = True          # Training windows start at a random time in the file.
  d.eval_max_segments = 0        # 0: all.
  d.cache_size = 256             # Decoded files kept in memory (10 s of 16 kHz: 640 kB,
                                 # plus the frames with video). 0: none.
  return config


def _window_samples(config) -> int:
  n = int(round(config.data.clip_seconds * config.data.sample_rate))
  if n < 1:
    raise ValueError(f'data.clip_seconds * data.sample_rate must be >= 1 sample, got {n}.')
  return n


def input_shapes(config) -> dict:
  """Per-example input shapes of the model: {'audio' | 'mel', optionally 'video'}."""
  m, d = config.model, config.data
  if m.input not in INPUTS:
    raise ValueError(f'model.input must be one of {INPUTS}, got {m.input!r}.')
  n = _window_samples(config)
  shapes = {}
  if m.input == 'raw_audio':
    if n % m.samples_per_patch:
      raise ValueError(f'the window of {n} samples (data.clip_seconds * '
                       f'data.sample_rate) is not a multiple of model.samples_per_patch '
                       f'({m.samples_per_patch}).')
    shapes['audio'] = (n, 1)
  else:
    frames = audio_features.num_frames(n, sample_rate=d.sample_rate)
    frames -= frames % m.mel_patch  # Whole patches only: trailing frames are dropped.
    if frames < m.mel_patch or m.num_mels % m.mel_patch:
      raise ValueError(f'log_mel: {frames} frames x model.num_mels={m.num_mels} bands must '
                       f'hold whole model.mel_patch={m.mel_patch} patches.')
    shapes['mel'] = (frames, m.num_mels, 1)
  if m.with_video:
    if m.image_size % m.image_patch:
      raise ValueError(f'model.image_size ({m.image_size}) must be a multiple of '
                       f'model.image_patch ({m.image_patch}).')
    if abs(m.num_frames / d.fps - d.clip_seconds) > 1.0 / d.fps:
      raise ValueError(f'with_video: model.num_frames / data.fps ({m.num_frames} / {d.fps:g}'
                       f' s) must cover data.clip_seconds ({d.clip_seconds:g} s) to within '
                       f'one frame.')
    shapes['video'] = (m.num_frames, m.image_size, m.image_size, 3)
  return shapes


def make_model(config, num_classes: int) -> hk.TransformedWithState:
  """apply(params, state, rng, batch, is_training) -> logits [B, num_classes]."""
  m = config.model
  shapes = input_shapes(config)

  def fourier(max_resolution):
    return dict(num_bands=m.num_bands, max_resolution=tuple(max_resolution),
                concat_pos=True, sine_only=False)

  def forward(batch, is_training: bool):
    if m.input == 'raw_audio':
      audio_key = 'audio'
      audio_prep = AudioPreprocessor(
          prep_type='patches', samples_per_patch=m.samples_per_patch,
          position_encoding_type='fourier',
          fourier_position_encoding_kwargs=fourier(
              (shapes['audio'][0] // m.samples_per_patch,)))
    else:
      audio_key = 'mel'
      frames, mels, _ = shapes['mel']
      audio_prep = ImagePreprocessor(
          prep_type='patches', spatial_downsample=m.mel_patch,
          position_encoding_type='fourier',
          fourier_position_encoding_kwargs=fourier(
              (frames // m.mel_patch, mels // m.mel_patch)))
    for key, shape in shapes.items():
      if tuple(batch[key].shape[1:]) != shape:
        raise ValueError(f'batch[{key!r}] must be [B, {", ".join(map(str, shape))}], got '
                         f'{batch[key].shape}.')
    if m.with_video:
      t, s = m.num_frames, m.image_size // m.image_patch
      preprocessor = MultimodalPreprocessor(modalities={
          'audio': audio_prep,
          'image': ImagePreprocessor(prep_type='patches', spatial_downsample=m.image_patch,
                                     position_encoding_type='fourier',
                                     fourier_position_encoding_kwargs=fourier((t, s, s)))},
          min_padding_size=4)
      inputs = {'audio': batch[audio_key], 'image': batch['video']}
    else:
      preprocessor, inputs = audio_prep, batch[audio_key]
    encoder = PerceiverEncoder(
        num_self_attends_per_block=m.num_self_attends_per_block, num_blocks=m.num_blocks,
        z_index_dim=m.num_latents, num_z_channels=m.num_latent_channels,
        num_cross_attend_heads=m.num_cross_attend_heads,
        num_self_attend_heads=m.num_self_attend_heads, cross_attend_widening_factor=1,
        self_attend_widening_factor=1, dropout_prob=m.dropout)
    decoder = ClassificationDecoder(
        num_classes, position_encoding_type='trainable',
        trainable_position_encoding_kwargs=dict(num_channels=m.num_latent_channels,
                                                init_scale=0.02),
        use_query_residual=True)
    model = Perceiver(encoder=encoder, decoder=decoder, input_preprocessor=preprocessor)
    return model(inputs, is_training=is_training)

  return hk.transform_with_state(forward)


def sigmoid_loss(logits, labels):
  """Mean over classes of sigmoid cross-entropy: [B, K], [B, K] -> [B]."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels), axis=-1)


def label_ranking_average_precision(logits, labels):
  """Per example: mean over its positives j of (positives scored >= s_j) / (classes
  scored >= s_j); [B, K], [B, K] -> [B] (0 for an example without positives)."""
  pos = labels > 0
  at_least = logits[:, None, :] >= logits[:, :, None]  # [B, j, k]: s_k >= s_j
  rank = jnp.sum(at_least, axis=-1)
  pos_rank = jnp.sum(at_least & pos[:, None, :], axis=-1)
  per_label = jnp.where(pos, pos_rank / rank, 0.0)
  return jnp.sum(per_label, -1) / jnp.maximum(jnp.sum(pos, -1), 1)


class _Reader:
  """Model-ready windows of an AudioSetSource's files (decoded once, cached)."""

  def __init__(self, source: audioset_data.AudioSetSource, config):
    self.source, self.config = source, config
    self.shapes = input_shapes(config)
    self._audio = functools.lru_cache(config.data.cache_size)(self._read_audio)
    self._video = functools.lru_cache(config.data.cache_size)(self._read_video)

  def _read_audio(self, i: int) -> np.ndarray:
    d = self.config.data
    return media.read_audio(self.source.audio_paths[i], sample_rate=d.sample_rate,
                            resample=d.resample_audio)

  def _read_video(self, i: int) -> np.ndarray:
    return media.read_video(self.source.video_paths[i], fps=self.config.data.fps,
                            size=self.config.model.image_size)

  def num_starts(self, i: int) -> int:
    """Window starts, in video frames (with video) or audio samples, that fit the file."""
    n = _window_samples(self.config)
    if 'video' in self.shapes:
      frames = len(self._video(i)) - self.config.model.num_frames + 1
      per_frame = self.config.data.sample_rate / self.config.data.fps
      audio_frames = int((len(self._audio(i)) - n) // per_frame) + 1
      return max(1, min(frames, audio_frames))
    return max(1, len(self._audio(i)) - n + 1)

  def example(self, i: int, start: int = 0) -> dict:
    d, m = self.config.data, self.config.model
    n = _window_samples(self.config)
    pad = 'zeros' if d.pad_short else 'error'
    out = {'labels': self.source.labels[i]}
    audio_start = start
    if 'video' in self.shapes:
      audio_start = int(round(start * d.sample_rate / d.fps))
      out['video'] = media.fit_length(
          self._video(i)[start:], m.num_frames, pad='edge' if d.pad_short else 'error',
          name=f'{self.source.video_paths[i]} (frames)').astype(np.float32) / 255.0
    audio = media.fit_length(self._audio(i)[audio_start:], n, pad=pad,
                             name=f'{self.source.audio_paths[i]} (samples)')
    if 'audio' in self.shapes:
      out['audio'] = audio[:, None]
    else:
      frames = self.shapes['mel'][0]
      mel = audio_features.log_mel_spectrogram(audio, sample_rate=d.sample_rate,
                                               num_mels=m.num_mels)
      out['mel'] = mel[:frames, :, None]
    return out

  def batch(self, indices, starts) -> dict:
    examples = [self.example(int(i), int(s)) for i, s in zip(indices, starts)]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _source(config, split: str) -> audioset_data.AudioSetSource:
  d = config.data
  for field in (f'{split}_segments', 'class_labels', 'audio_root') + (
      ('video_root',) if config.model.with_video else ()):
    if not d[field]:
      raise ValueError(f'data.{field} is not set (--config.data.{field}=PATH).')
  return audioset_data.AudioSetSource(
      segments_csv=d[f'{split}_segments'], class_labels_csv=d.class_labels,
      audio_root=d.audio_root, video_root=d.video_root or None,
      max_segments=d.eval_max_segments if split == 'eval' else 0)


def build(config: ml_collections.ConfigDict) -> Task:
  d = config.data
  train = _Reader(_source(config, 'train'), config)
  evaluation = _Reader(_source(config, 'eval'), config)
  num_classes = train.source.num_classes
  model = make_model(config, num_classes)

  def loss(logits, batch):
    return sigmoid_loss(logits, batch['labels'])

  def metrics(logits, batch):
    best = jnp.argmax(logits, -1)
    hit = jnp.take_along_axis(batch['labels'], best[:, None], axis=-1)[:, 0]
    return {'top1_precision': hit,
            'lrap': label_ranking_average_precision(logits, batch['labels'])}

  def train_batch(step: int) -> dict:
    size = config.train.batch_size
    if d.balanced:
      idx = audioset_data.balanced_indices(train.source.labels, seed=config.seed,
                                           step=step, batch_size=size)
    else:
      idx = sampling.batch_indices(seed=config.seed, step=step, batch_size=size,
                                   num_examples=len(train.source))
    if d.random_start:
      rng = sampling.step_rng(config.seed, step)
      starts = [int(rng.integers(train.num_starts(int(i)))) for i in idx]
    else:
      starts = [0] * len(idx)
    return train.batch(idx, starts)

  def eval_batches(size: int):
    n = len(evaluation.source)
    for first in range(0, n, size):
      idx = list(range(first, min(first + size, n)))
      yield evaluation.batch(idx, [0] * len(idx))

  return Task(model=model, loss=loss, metrics=metrics, train_batch=train_batch,
              eval_batches=eval_batches)


# ---------------------------------------------------------------------------------------
# perceiver-agents predict audioset --checkpoint WORKDIR [FILES...] [--out FILE]


def predict(command: CommandArgs) -> int:
  parser = argparse.ArgumentParser(
      prog='perceiver-agents predict audioset',
      description='Without FILES: mAP, mAUC and d-prime of the checkpoint on the eval '
                  'segments. With FILES: the top-5 classes of each audio/video file.')
  parser.add_argument('files', nargs='*', help='audio or video files to classify')
  parser.add_argument('--out', default='', help='write the JSON report here too')
  known = parser.parse_args(command.args)
  checkpoint = command.require_checkpoint('a training workdir')
  config = workdir_lib.run_config(sys.modules[__name__], checkpoint, command.overrides)
  if config.model.with_video and known.files:
    raise ValueError('predicting single files is for audio-only models (model.with_video '
                     'is set).')
  mids, names = audioset_data.read_class_labels(config.data.class_labels)
  model = make_model(config, len(mids))
  sample = {k: np.zeros((1,) + s, np.float32) for k, s in input_shapes(config).items()}
  sample['labels'] = np.zeros((1, len(mids)), np.float32)
  params, state = workdir_lib.restore(model, config, checkpoint, sample,
                                      overrides=command.overrides)
  logits_fn = jax.jit(lambda b: model.apply(params, state, jax.random.PRNGKey(0), b,
                                            is_training=False)[0])
  if known.files:
    report = {'predictions': []}
    for path in known.files:
      reader = _Reader(_single_file_source(path, len(mids)), config)
      batch = reader.batch([0], [0])
      probs = np.asarray(jax.nn.sigmoid(logits_fn(batch))[0])
      top = np.argsort(-probs)[:5]
      report['predictions'].append({'file': path, 'top5': [
          {'class': int(k), 'mid': mids[k], 'name': names[k],
           'probability': float(probs[k])} for k in top]})
  else:
    reader = _Reader(_source(config, 'eval'), config)
    scores, targets = [], []
    n = len(reader.source)
    size = config.eval.batch_size
    for first in range(0, n, size):
      idx = list(range(first, min(first + size, n)))
      batch = reader.batch(idx, [0] * len(idx))
      scores.append(np.asarray(logits_fn(batch)))
      targets.append(batch['labels'])
    report = multilabel_metrics.multilabel_report(np.concatenate(scores),
                                                  np.concatenate(targets))
    report['num_missing_files'] = reader.source.num_missing
  print(json.dumps(report))
  if known.out:
    with open(known.out, 'w') as f:
      json.dump(report, f, indent=2)
  return 0


class _single_file_source:  # pylint: disable=invalid-name
  """The AudioSetSource interface for one unlabelled file."""

  def __init__(self, path: str, num_classes: int):
    self.audio_paths, self.video_paths = [path], [None]
    self.labels = np.zeros((1, num_classes), np.float32)
