"""Optical-flow file formats and the layouts of the public flow datasets.

Formats (all flows are [H, W, 2] float32, channel 0 = u (x, columns), 1 = v (y, rows);
a pixel p of frame 1 moves to p + flow[p] in frame 2):

  .flo (Middlebury / MPI-Sintel / FlyingChairs): float32 magic 202021.25, int32 width,
      int32 height, then H * W * 2 float32 (u, v interleaved), little-endian.
  KITTI flow PNG: 16-bit RGB; u = (R - 2**15) / 64, v = (G - 2**15) / 64, B = 1 where the
      ground truth is valid.

Dataset layouts (as the archives unpack):

  MPI-Sintel   ROOT/training/{clean,final}/SCENE/frame_0001.png, ...
               ROOT/training/flow/SCENE/frame_0001.flo  (flow from frame i to i + 1)
  KITTI 2015   ROOT/training/image_2/000000_10.png, 000000_11.png
               ROOT/training/flow_occ/000000_10.png     (all pixels; flow_noc: non-occluded)
  FlyingChairs ROOT/data/00001_img1.ppm, 00001_img2.ppm, 00001_flow.flo
               optional ROOT/FlyingChairs_train_val.txt (one line per pair: 1 train, 2 val)

Every reader raises ValueError naming the file or folder that is missing or malformed.
"""

import dataclasses
import os
from typing import List, Optional, Tuple

import numpy as np

FLO_MAGIC = np.float32(202021.25)
_MAX_FLO_SIDE = 1 << 15


@dataclasses.dataclass(frozen=True)
class FlowPair:
  """Paths of one example: two frames and (if known) its ground-truth flow file."""
  frame1: str
  frame2: str
  flow: Optional[str]
  flow_format: str = 'flo'  # 'flo' or 'kitti_png'


def read_flo(path: str) -> np.ndarray:
  """Reads a .flo file -> flow float32 [H, W, 2]."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise ValueError(f'{path}: cannot read flow file ({e.strerror}).') from None
  if len(data) < 12:
    raise ValueError(f'{path}: not a .flo file: {len(data)} bytes, shorter than the '
                     '12-byte header.')
  magic = np.frombuffer(data, '<f4', count=1)[0]
  if magic != FLO_MAGIC:
    raise ValueError(f'{path}: not a .flo file: magic number {magic!r}, expected '
                     f'{float(FLO_MAGIC)}.')
  width, height = (int(x) for x in np.frombuffer(data, '<i4', count=2, offset=4))
  if not (0 < width < _MAX_FLO_SIDE and 0 < height < _MAX_FLO_SIDE):
    raise ValueError(f'{path}: bad .flo header: width={width}, height={height}.')
  expected = 12 + 8 * width * height
  if len(data) != expected:
    kind = 'truncated' if len(data) < expected else 'too long'
    raise ValueError(f'{path}: .flo file {kind}: {len(data)} bytes, expected {expected} '
                     f'for {width}x{height}.')
  flow = np.frombuffer(data, '<f4', offset=12).reshape(height, width, 2)
  return flow.astype(np.float32)


def write_flo(path: str, flow: np.ndarray) -> None:
  """Writes flow [H, W, 2] as a .flo file."""
  flow = np.asarray(flow)
  if flow.ndim != 3 or flow.shape[2] != 2:
    raise ValueError(f'flow must be [H, W, 2], got shape {flow.shape}.')
  with open(path, 'wb') as f:
    f.write(FLO_MAGIC.astype('<f4').tobytes())
    f.write(np.asarray([flow.shape[1], flow.shape[0]], '<i4').tobytes())
    f.write(np.ascontiguousarray(flow, '<f4').tobytes())


def _tf():
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError('16-bit PNG flow files need TensorFlow: pip install '
                     "'perceiver-agents[data]'.") from None
  return tf


def read_kitti_flow(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """Reads a KITTI flow PNG -> (flow float32 [H, W, 2], valid bool [H, W])."""
  tf = _tf()
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise ValueError(f'{path}: cannot read KITTI flow file ({e.strerror}).') from None
  if not data.startswith(b'\x89PNG'):
    raise ValueError(f'{path}: not a PNG file.')
  try:
    image = tf.io.decode_png(data, channels=3, dtype=tf.uint16).numpy()
  except tf.errors.OpError as e:
    raise ValueError(f'{path}: corrupt PNG ({e.message}).') from None
  raw = image.astype(np.float32)
  flow = (raw[..., :2] - 2.0**15) / 64.0
  valid = image[..., 2] > 0
  flow[~valid] = 0.0
  return flow, valid


def write_kitti_flow(path: str, flow: np.ndarray, valid: Optional[np.ndarray] = None) -> None:
  """Writes flow [H, W, 2] (and valid bool [H, W], default all) as a KITTI 16-bit PNG."""
  tf = _tf()
  flow = np.asarray(flow, np.float64)
  if flow.ndim != 3 or flow.shape[2] != 2:
    raise ValueError(f'flow must be [H, W, 2], got shape {flow.shape}.')
  valid = np.ones(flow.shape[:2], bool) if valid is None else np.asarray(valid, bool)
  if valid.shape != flow.shape[:2]:
    raise ValueError(f'valid must be {flow.shape[:2]}, got {valid.shape}.')
  encoded = np.clip(np.round(flow * 64.0 + 2.0**15), 0, 2**16 - 1).astype(np.uint16)
  image = np.concatenate([encoded, valid[..., None].astype(np.uint16)], axis=-1)
  with open(path, 'wb') as f:
    f.write(tf.io.encode_png(image).numpy())


def read_image(path: str) -> np.ndarray:
  """Reads an RGB frame (png, jpg, ppm, ...) -> uint8 [H, W, 3].

  Raises ValueError for unreadable files and for grayscale or other non-RGB frames.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      mode = image.mode
      if mode not in ('RGB', 'RGBA', 'P'):
        raise ValueError(f'{path}: frames must be RGB colour images, got PIL mode '
                         f'{mode!r} (grayscale frames are not supported).')
      array = np.asarray(image.convert('RGB'))
  except OSError as e:
    raise ValueError(f'{path}: cannot read image ({e}).') from None
  return array


def read_flow(pair: FlowPair) -> Tuple[np.ndarray, np.ndarray]:
  """Ground truth of `pair` -> (flow float32 [H, W, 2], valid bool [H, W])."""
  if pair.flow is None:
    raise ValueError(f'{pair.frame1}: this pair has no ground-truth flow.')
  if pair.flow_format == 'kitti_png':
    return read_kitti_flow(pair.flow)
  flow = read_flo(pair.flow)
  return flow, np.all(np.isfinite(flow), axis=-1) & np.all(np.abs(flow) < 1e9, axis=-1)


def load_pair(pair: FlowPair) -> dict:
  """{'frames': uint8 [2, H, W, 3], 'flow': float32 [H, W, 2], 'valid': bool [H, W]}."""
  frame1, frame2 = read_image(pair.frame1), read_image(pair.frame2)
  if frame1.shape != frame2.shape:
    raise ValueError(f'{pair.frame2}: frame size {frame2.shape[:2]} differs from '
                     f'{pair.frame1} ({frame1.shape[:2]}).')
  flow, valid = read_flow(pair)
  if flow.shape[:2] != frame1.shape[:2]:
    raise ValueError(f'{pair.flow}: flow size {flow.shape[:2]} differs from the frames '
                     f'({frame1.shape[:2]}).')
  return {'frames': np.stack([frame1, frame2]), 'flow': np.nan_to_num(flow) * valid[..., None],
          'valid': valid}


def _require_dir(path: str, what: str) -> str:
  if not os.path.isdir(path):
    raise ValueError(f'{path}: missing {what} folder.')
  return path


def sintel_pairs(root: str, *, split: str = 'training', dstype: str = 'clean') -> List[FlowPair]:
  """Consecutive frame pairs of MPI-Sintel, scene by scene (flow only for 'training')."""
  if dstype not in ('clean', 'final'):
    raise ValueError(f"dstype must be 'clean' or 'final', got {dstype!r}.")
  if split not in ('training', 'test'):
    raise ValueError(f"split must be 'training' or 'test', got {split!r}.")
  image_root = _require_dir(os.path.join(root, split, dstype), f'MPI-Sintel {split}/{dstype}')
  flow_root = (_require_dir(os.path.join(root, split, 'flow'), f'MPI-Sintel {split}/flow')
               if split == 'training' else None)
  pairs = []
  for scene in sorted(os.listdir(image_root)):
    frames = sorted(f for f in os.listdir(os.path.join(image_root, scene))
                    if f.endswith('.png'))
    for a, b in zip(frames[:-1], frames[1:]):
      flow = None
      if flow_root is not None:
        flow = os.path.join(flow_root, scene, a[:-4] + '.flo')
        if not os.path.exists(flow):
          raise ValueError(f'{flow}: missing ground-truth flow for {scene}/{a}.')
      pairs.append(FlowPair(os.path.join(image_root, scene, a),
                            os.path.join(image_root, scene, b), flow))
  if not pairs:
    raise ValueError(f'{image_root}: no frame pairs found.')
  return pairs


def kitti_pairs(root: str, *, split: str = 'training', occluded: bool = True) -> List[FlowPair]:
  """KITTI 2015 pairs (frames _10 and _11); flow_occ (all pixels) or flow_noc."""
  if split not in ('training', 'testing'):
    raise ValueError(f"split must be 'training' or 'testing', got {split!r}.")
  image_root = _require_dir(os.path.join(root, split, 'image_2'), f'KITTI {split}/image_2')
  flow_name = 'flow_occ' if occluded else 'flow_noc'
  flow_root = (_require_dir(os.path.join(root, split, flow_name), f'KITTI {split}/{flow_name}')
               if split == 'training' else None)
  pairs = []
  for name in sorted(os.listdir(image_root)):
    if not name.endswith('_10.png'):
      continue
    stem = name[:-len('_10.png')]
    frame2 = os.path.join(image_root, stem + '_11.png')
    if not os.path.exists(frame2):
      raise ValueError(f'{frame2}: missing second frame of {name}.')
    flow = os.path.join(flow_root, name) if flow_root else None
    if flow is not None and not os.path.exists(flow):
      raise ValueError(f'{flow}: missing ground-truth flow for {name}.')
    pairs.append(FlowPair(os.path.join(image_root, name), frame2, flow, 'kitti_png'))
  if not pairs:
    raise ValueError(f'{image_root}: no *_10.png frames found.')
  return pairs


def chairs_pairs(root: str, *, split: Optional[str] = None) -> List[FlowPair]:
  """FlyingChairs pairs; split 'train' or 'val' uses ROOT/FlyingChairs_train_val.txt."""
  data = _require_dir(os.path.join(root, 'data'), 'FlyingChairs data')
  stems = sorted(f[:-len('_flow.flo')] for f in os.listdir(data) if f.endswith('_flow.flo'))
  if not stems:
    raise ValueError(f'{data}: no *_flow.flo files found.')
  if split is not None:
    if split not in ('train', 'val'):
      raise ValueError(f"split must be None, 'train' or 'val', got {split!r}.")
    split_file = os.path.join(root, 'FlyingChairs_train_val.txt')
    if not os.path.exists(split_file):
      raise ValueError(f'{split_file}: missing split file (needed for split={split!r}).')
    marks = np.loadtxt(split_file, dtype=np.int64, ndmin=1)
    if len(marks) != len(stems):
      raise ValueError(f'{split_file}: {len(marks)} lines for {len(stems)} pairs.')
    keep = 1 if split == 'train' else 2
    stems = [s for s, m in zip(stems, marks) if m == keep]
  pairs = []
  for stem in stems:
    frames = [os.path.join(data, f'{stem}_img{i}.ppm') for i in (1, 2)]
    for frame in frames:
      if not os.path.exists(frame):
        raise ValueError(f'{frame}: missing frame.')
    pairs.append(FlowPair(frames[0], frames[1], os.path.join(data, f'{stem}_flow.flo')))
  return pairs


DATASETS = {'sintel_clean': lambda root: sintel_pairs(root, dstype='clean'),
            'sintel_final': lambda root: sintel_pairs(root, dstype='final'),
            'kitti': kitti_pairs,
            'chairs': chairs_pairs}
