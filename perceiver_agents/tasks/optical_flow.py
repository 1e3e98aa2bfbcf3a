"""Optical flow with the published Perceiver IO flow model (zoo.optical_flow_perceiver).

The model sees two frames of the training size (3x3 patches of both, Fourier positions) and
decodes a flow vector per pixel. Any other image size is handled by overlapping tiles of
the training size, blended with weights that fall off linearly towards each tile's border
(as the published evaluation does; here for arbitrary sizes, min overlap model.min_overlap).

Data (data.source / data.eval_source):
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
import functools
import json
import sys
from typing import Iterator, List, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_agents import zoo
from perceiver_agents.data import flow_augment, flow_formats, flow_viz, procedural_flow, sampling
from perceiver_agents.learner.config import default_config
from perceiver_agents.tasks import pretrained
from perceiver_agents.tasks import workdir as workdir_lib
from perceiver_agents.tasks.base import CommandArgs, Task

SOURCES = ('procedural',) + tuple(flow_formats.DATASETS)
EVAL_SEED_OFFSET = 1_000_003  # Procedural eval pairs: seed + this (never trained on).


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


# ----------------------------------------------------------------------------- tiling


def tile_starts(size: int, tile: int, min_overlap: int) -> List[int]:
  """Start offsets of tiles of length `tile` covering [0, size) with >= min_overlap overlap."""
  if size <= tile:
    return [0]
  if not 0 <= min_overlap < tile:
    raise ValueError(f'model.min_overlap must be in [0, {tile}), got {min_overlap}.')
  count = int(np.ceil((size - min_overlap) / (tile - min_overlap)))
  return [int(round(s)) for s in np.linspace(0, size - tile, count)]


def tile_weights(height: int, width: int) -> np.ndarray:
  """Blending weights [h, w]: 1 + distance to the nearest tile border (a pyramid)."""
  y = np.minimum(np.arange(height) + 1, height - np.arange(height))
  x = np.minimum(np.arange(width) + 1, width - np.arange(width))
  return np.minimum(y[:, None], x[None, :]).astype(np.float32)


def tiled(apply_tile, frames: jax.Array, tile: Tuple[int, int], min_overlap: int) -> jax.Array:
  """Flow of frames [B, 2, H, W, 3] of any size from `apply_tile` on [N, 2, h, w, 3] tiles.

  Images smaller than the tile are edge-padded to it and the flow cropped back.
  """
  b, _, height, width, _ = frames.shape
  th, tw = tile
  ph, pw = max(0, th - height), max(0, tw - width)
  if ph or pw:
    frames = jnp.pad(frames, [(0, 0), (0, 0), (0, ph), (0, pw), (0, 0)], mode='edge')
  full_h, full_w = height + ph, width + pw
  starts = [(y, x) for y in tile_starts(full_h, th, min_overlap)
            for x in tile_starts(full_w, tw, min_overlap)]
  tiles = jnp.concatenate([frames[:, :, y:y + th, x:x + tw] for y, x in starts])  # [T*B, ...]
  flows = apply_tile(tiles).reshape(len(starts), b, th, tw, 2)
  weights = jnp.asarray(tile_weights(th, tw))[None, :, :, None]                     # [1, h, w, 1]
  total = jnp.zeros((b, full_h, full_w, 2), flows.dtype)
  norm = jnp.zeros((1, full_h, full_w, 1), flows.dtype)
  for i, (y, x) in enumerate(starts):
    total = total.at[:, y:y + th, x:x + tw].add(flows[i] * weights)
    norm = norm.at[:, y:y + th, x:x + tw].add(weights)
  return (total / norm)[:, :height, :width]


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
    return tiled(apply_tile, frames, tile, min_overlap), state

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


def normalize(frames: np.ndarray) -> np.ndarray:
  """Frames in [0, 255] -> float32 in [-1, 1] (the published model's input range)."""
  return (np.asarray(frames, np.float32) / 255.0 * 2.0 - 1.0).astype(np.float32)


def _stack(examples: Sequence[dict]) -> dict:
  return {'frames': normalize(np.stack([e['frames'] for e in examples])),
          'flow': np.stack([e['flow'] for e in examples]).astype(np.float32),
          'valid': np.stack([e['valid'] for e in examples])}


def _pairs(source: str, root: str, what: str) -> List[flow_formats.FlowPair]:
  if not root:
    raise ValueError(f'data.{what}: source {source!r} needs the dataset folder '
                     f'(--config.data.{what}=PATH).')
  return flow_formats.DATASETS[source](root)


def build(config: ml_collections.ConfigDict) -> Task:
  d = config.data
  for name in ('source', 'eval_source'):
    if d[name] not in SOURCES:
      raise ValueError(f'data.{name} must be one of {SOURCES}, got {d[name]!r}.')
  tile = tuple(model_kwargs(config)['train_size'])
  augment = functools.partial(flow_augment.augment, out_size=tile,
                              scale_range=tuple(d.scale_range), flip=d.flip,
                              photometric_strength=d.photometric)
  batch_size = config.train.batch_size

  if d.source == 'procedural':
    def train_example(step: int, j: int) -> dict:
      index = step * batch_size + j
      pair = procedural_flow.make_pair(
          seed=config.seed, index=index, height=tile[0] + d.margin,
          width=tile[1] + d.margin, max_displacement=d.max_displacement)
      return augment(pair, np.random.default_rng([config.seed, index, 7]))
  else:
    train_pairs = _pairs(d.source, d.root, 'root')

    def train_example(step: int, j: int) -> dict:
      idx = sampling.batch_indices(seed=config.seed, step=step, batch_size=batch_size,
                                   num_examples=len(train_pairs))[j]
      example = flow_formats.load_pair(train_pairs[idx])
      return augment(example, np.random.default_rng([config.seed, step, j, 7]))

  def train_batch(step: int) -> dict:
    return _stack([train_example(step, j) for j in range(batch_size)])

  def eval_examples() -> Iterator[dict]:
    if d.eval_source == 'procedural':
      size = tuple(d.eval_size) if tuple(d.eval_size) != (0, 0) else tile
      for i in range(d.num_eval):
        yield procedural_flow.make_pair(
            seed=config.seed + EVAL_SEED_OFFSET, index=i, height=size[0], width=size[1],
            max_displacement=d.max_displacement)
    else:
      for pair in _pairs(d.eval_source, d.eval_root, 'eval_root'):
        yield flow_formats.load_pair(pair)

  def eval_batches(size: int) -> Iterator[dict]:
    group = []   # Consecutive examples of one image size.
    for example in eval_examples():
      if group and (len(group) == size or group[0]['flow'].shape != example['flow'].shape):
        yield _stack(group)
        group = []
      group.append(example)
    if group:
      yield _stack(group)

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
    return np.asarray(run(normalize(frames)[None]))[0]

  return predict_flow


def _zero_batch(config: ml_collections.ConfigDict) -> dict:
  """A batch of zeros with the shapes of config's training batches."""
  b, tile = config.train.batch_size, tuple(model_kwargs(config)['train_size'])
  return {'frames': np.zeros((b, 2) + tile + (3,), np.float32),
          'flow': np.zeros((b,) + tile + (2,), np.float32),
          'valid': np.ones((b,) + tile, bool)}


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
