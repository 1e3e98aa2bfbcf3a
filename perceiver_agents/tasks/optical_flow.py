"""Optical flow with the published Perceiver IO flow model (zoo.optical_flow_perceiver).

The model sees two frames of the training size (3x3 patches of both, Fourier positions) and
decodes a flow vector per pixel. Any other image size is handled by overlapping tiles of
the training size (zoo.tiled_flow, min overlap model.min_overlap).

Data (data.source / data.eval_source; batches: data/flow_batches.py):
  procedural     textured layers moving with known flow (data/procedural_flow.py), a pure
                 function of (seed, index); eval pairs come from a different seed.
  sintel_clean, sintel_final, kitti, chairs   the real layouts under data.root / eval_root
                 (data/flow_formats.py), with photometric + geometric augmentation.
Metrics: end-point error (epe, pixels) and KITTI Fl-all (fl_all: fraction of valid pixels
with EPE > 3 px and > 5% of the true flow's length).

    perceiver-agents train optical_flow --workdir runs/flow               # small, procedural
    perceiver-agents train optical_flow --workdir runs/sintel --config.model.size=published \\
        --config.data.source=sintel_final --config.data.root=/data/Sintel \\
        --config.model.init_checkpoint=optical_flow_checkpoint.pystate
    perceiver-agents predict optical_flow --checkpoint runs/flow FRAME1 FRAME2 --out flow.png
"""

import argparse
import copy
import json
import sys
from typing import Iterator

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_agents import zoo
from perceiver_agents.data import flow_batches, flow_formats, flow_viz
from perceiver_agents.learner.config import default_config
from perceiver_agents.tasks import pretrained
from perceiver_agents.tasks import workdir as workdir_lib
from perceiver_agents.tasks.base import CommandArgs, Task


# The small variant (--config.preset=local, tasks/base.py): trains end to end in under a
# minute on 2 CPU cores.
PRESETS = {'local': (
    'model.train_size=(8,12)', 'model.num_bands=4', 'model.num_latents=8',
    'model.num_latent_channels=16', 'model.num_self_attends=1',
    'model.num_self_attend_heads=2', 'model.min_overlap=4', 'data.margin=4',
    'data.max_displacement=2.0', 'data.num_eval=8', 'train.batch_size=2',
    'eval.batch_size=2', 'train.steps=50',
    'train.log_every=10', 'eval.every=0', 'checkpoint.every=0')}


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.train.steps = 3000
  config.train.batch_size = 16
  config.train.log_every = 50
  config.eval.every = 1000
  config.eval.batch_size = 16
  config.checkpoint.every = 500
  config.optimizer.name = 'lamb'
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 200
  config.optimizer.weight_decay = 1e-4

  config.model = ml_collections.ConfigDict()
  config.model.size = 'small'          # 'small' (the fields below) or 'published'.
  config.model.train_size = (32, 48)   # (H, W) of the model's input; published: (368, 496).
  config.model.num_bands = 16
  config.model.num_latents = 128
  config.model.num_latent_channels = 96
  config.model.num_self_attends = 4
  config.model.num_self_attend_heads = 4
  config.model.min_overlap = 20        # Tiles at other sizes overlap by >= this (published: 20).
  config.model.init_checkpoint = ''    # Released .pystate or .npz to start from.
  # Memory (same parameters and outputs; benchmarks/memory.py): decode the H*W flow
  # queries, and cross-attend the H*W inputs, this many at a time; 0: all at once.
  # At full resolution with the published model, 8192 / 8192 is what bounds peak memory
  # (the measured peaks: BENCHMARKS.md, "Memory at scale").
  config.model.decode_chunk_size = 0
  config.model.cross_attend_kv_chunk_size = 0

  config.data = ml_collections.ConfigDict()
  config.data.source = 'procedural'
  config.data.root = ''
  config.data.eval_source = 'procedural'
  config.data.eval_root = ''
  config.data.max_displacement = 8.0   # procedural: largest translation, pixels.
  config.data.margin = 8               # procedural: pairs are made this much larger, then cropped.
  config.data.num_eval = 256           # procedural eval pairs.
  config.data.eval_size = (0, 0)       # procedural eval pair size; (0, 0): the train size.
  config.data.scale_range = (1.0, 1.0)  # Random rescaling (dense ground truth only).
  config.data.flip = True
  config.data.photometric = 1.0        # Strength of colour jitter; 0 disables.
  return config


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
  """Keyword arguments of zoo.optical_flow_perceiver for config.model."""
  m = config.model
  kwargs = copy.deepcopy(zoo.PUBLISHED['optical_flow'][1])
  if m.size not in ('small', 'published'):
    raise ValueError(f"model.size must be 'small' or 'published', got {m.size!r}.")
  if m.size == 'small':
    kwargs['train_size'] = tuple(m.train_size)
    kwargs['num_bands'] = m.num_bands
    kwargs['encoder'].update(
        z_index_dim=m.num_latents, num_z_channels=m.num_latent_channels,
        num_self_attends_per_block=m.num_self_attends,
        num_self_attend_heads=m.num_self_attend_heads)
  for field in ('decode_chunk_size', 'cross_attend_kv_chunk_size'):
    if m.get(field, 0) < 0:
      raise ValueError(f'model.{field} must be >= 0 (0: no chunking), got {m[field]}.')
  if m.get('decode_chunk_size', 0):
    kwargs['decode_chunk_size'] = m.decode_chunk_size
  if m.get('cross_attend_kv_chunk_size', 0):
    kwargs['encoder']['cross_attend_kv_chunk_size'] = m.cross_attend_kv_chunk_size
  return kwargs


def build_model(config: ml_collections.ConfigDict) -> hk.TransformedWithState:
  """apply(params, state, rng, batch, is_training) -> flow [B, H, W, 2].

  batch['frames']: float [B, 2, H, W, 3] in [-1, 1], any H, W when not training.
  """
  kwargs = model_kwargs(config)
  net = zoo.optical_flow_perceiver(**kwargs)
  tile = tuple(kwargs['train_size'])
  min_overlap = config.model.min_overlap

  def init(rng, batch, is_training=True):
    del is_training
    frames = jnp.zeros((1, 2) + tile + (3,), jnp.float32)
    return net.init(rng, frames, is_training=True), {}

  def apply(params, state, rng, batch, is_training=False):
    frames = batch['frames']
    if frames.ndim != 5 or frames.shape[1] != 2 or frames.shape[-1] != 3:
      raise ValueError(f"batch['frames'] must be [B, 2, H, W, 3], got {frames.shape}.")
    if tuple(frames.shape[2:4]) == tile:
      return net.apply(params, rng, frames, is_training=is_training), state
    if is_training:
      raise ValueError(f'training frames must be {tile}, got {tuple(frames.shape[2:4])}.')
    apply_tile = lambda x: net.apply(params, rng, x, is_training=False)
    return zoo.tiled_flow(apply_tile, frames, tile, min_overlap), state

  model = hk.TransformedWithState(init=init, apply=apply)
  if config.model.init_checkpoint:
    model = pretrained.start_from(model, config.model.init_checkpoint)
  return model


# ---------------------------------------------------------------------------- metrics


def end_point_error(flow: jax.Array, target: jax.Array) -> jax.Array:
  """Per-pixel EPE [B, H, W] = ||flow - target||_2 of flows [B, H, W, 2]."""
  return jnp.sqrt(jnp.sum(jnp.square(flow - target), axis=-1))


def _masked_mean(values: jax.Array, valid: jax.Array) -> jax.Array:
  valid = valid.astype(values.dtype)
  return jnp.sum(values * valid, axis=(1, 2)) / jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1.0)


def epe(flow: jax.Array, target: jax.Array, valid: jax.Array) -> jax.Array:
  """Mean EPE over valid pixels, per example [B]."""
  return _masked_mean(end_point_error(flow, target), valid)


def fl_all(flow: jax.Array, target: jax.Array, valid: jax.Array) -> jax.Array:
  """KITTI Fl-all per example [B]: fraction of valid pixels with EPE > 3 px and > 5% |gt|."""
  error = end_point_error(flow, target)
  length = jnp.sqrt(jnp.sum(jnp.square(target), axis=-1))
  outlier = (error > 3.0) & (error > 0.05 * length)
  return _masked_mean(outlier.astype(jnp.float32), valid)


def loss(flow, batch):
  return epe(flow, batch['flow'], batch['valid'])


def metrics(flow, batch):
  return {'epe': epe(flow, batch['flow'], batch['valid']),
          'fl_all': fl_all(flow, batch['flow'], batch['valid'])}


# ------------------------------------------------------------------------------- data


def build(config: ml_collections.ConfigDict) -> Task:
  d = config.data
  for name in ('source', 'eval_source'):
    flow_batches.check_source(d[name], name=f'data.{name}')
  tile = tuple(model_kwargs(config)['train_size'])
  train_batch = flow_batches.train_batches(
      source=d.source, root=d.root, seed=config.seed, batch_size=config.train.batch_size,
      out_size=tile, margin=d.margin, max_displacement=d.max_displacement,
      scale_range=tuple(d.scale_range), flip=d.flip, photometric=d.photometric)
  eval_size = tuple(d.eval_size) if tuple(d.eval_size) != (0, 0) else tile

  def eval_batches(size: int) -> Iterator[dict]:
    examples = flow_batches.eval_examples(
        source=d.eval_source, root=d.eval_root, seed=config.seed, num_eval=d.num_eval,
        size=eval_size, max_displacement=d.max_displacement)
    return flow_batches.eval_batches(examples, size)

  return Task(model=build_model(config), loss=loss, metrics=metrics,
              train_batch=train_batch, eval_batches=eval_batches)


# ---------------------------------------------------------------------------- predict


def make_predictor(config: ml_collections.ConfigDict, params, state):
  """frames uint8/float [2, H, W, 3] in [0, 255] -> flow float32 [H, W, 2] (any H, W)."""
  model = build_model(config)

  @jax.jit
  def run(frames):
    return model.apply(params, state, jax.random.PRNGKey(0), {'frames': frames},
                       is_training=False)[0]

  def predict_flow(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] != 2 or frames.shape[-1] != 3:
      raise ValueError(f'frames must be [2, H, W, 3], got {frames.shape}.')
    return np.asarray(run(flow_batches.normalize(frames)[None]))[0]

  return predict_flow


def _zero_batch(config: ml_collections.ConfigDict) -> dict:
  """A batch of zeros with the shapes of config's training batches."""
  return flow_batches.zero_batch(config.train.batch_size,
                                 tuple(model_kwargs(config)['train_size']))


def predict(command: CommandArgs) -> int:
  """`perceiver-agents predict optical_flow --checkpoint PATH FRAME1 FRAME2 --out flow.png`."""
  parser = argparse.ArgumentParser(
      prog='perceiver-agents predict optical_flow',
      description='Estimate the flow from FRAME1 to FRAME2 (any size; tiled).',
      epilog='PATH: a workdir of `perceiver-agents train optical_flow`, or a weights file '
             '(released .pystate with --config.model.size=published, or .npz).')
  parser.add_argument('frame1')
  parser.add_argument('frame2')
  parser.add_argument('--out', required=True, help='colour-wheel PNG of the flow')
  parser.add_argument('--flo', default=None, help='also write the flow as a .flo file')
  parser.add_argument('--max_flow', type=float, default=None,
                      help='flow length of full saturation (default: the largest)')
  known = parser.parse_args(command.args)
  checkpoint = command.require_checkpoint()
  frames = [flow_formats.read_image(p) for p in (known.frame1, known.frame2)]
  if frames[0].shape != frames[1].shape:
    raise ValueError(f'{known.frame2}: frame size {frames[1].shape[:2]} differs from '
                     f'{known.frame1} ({frames[0].shape[:2]}).')
  config, params, state = workdir_lib.load_for_predict(
      sys.modules[__name__], 'optical_flow', checkpoint, command.overrides, _zero_batch)
  flow = make_predictor(config, params, state)(np.stack(frames))
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(flow_viz.flow_to_rgb(flow, max_flow=known.max_flow)).save(known.out)
  if known.flo:
    flow_formats.write_flo(known.flo, flow)
  speed = np.sqrt(np.sum(flow**2, -1))
  print(json.dumps({'out': known.out, 'flo': known.flo, 'size': list(flow.shape[:2]),
                    'mean_flow': [float(flow[..., 0].mean()), float(flow[..., 1].mean())],
                    'max_speed': float(speed.max())}))
  return 0
