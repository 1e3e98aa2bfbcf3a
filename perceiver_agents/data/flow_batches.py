"""Training and eval batches of optical-flow pairs, as pure functions of (seed, step).

A batch is {'frames': float32 [B, 2, H, W, 3] in [-1, 1], 'flow': float32 [B, H, W, 2],
'valid': bool [B, H, W]} (the flow model's input range; flow in pixels, (dx, dy)).

Sources:
  procedural     textured layers moving with known flow (data/procedural_flow.py), a pure
                 function of (seed, index); training pairs are made `margin` larger than
                 the crop, eval pairs come from seed + EVAL_SEED_OFFSET (never trained on).
  sintel_clean, sintel_final, kitti, chairs   the real layouts under a dataset folder
                 (data/flow_formats.py).
Training examples are augmented (data/flow_augment.py) and cropped to the model's size;
eval examples are whole pairs, batched by consecutive runs of one image size.

    train_batch = train_batches(source='procedural', root='', seed=0, batch_size=16,
                                out_size=(32, 48), margin=8, max_displacement=8.0)
    batch = train_batch(step)
    for batch in eval_batches(eval_examples(source='procedural', ...), batch_size=16): ...
"""

import functools
from typing import Callable, Iterable, Iterator, List, Sequence, Tuple

import numpy as np

from perceiver_agents.data import flow_augment, flow_formats, procedural_flow, sampling

SOURCES = ('procedural',) + tuple(flow_formats.DATASETS)
EVAL_SEED_OFFSET = 1_000_003  # Procedural eval pairs: seed + this (never trained on).


def normalize(frames: np.ndarray) -> np.ndarray:
  """Frames in [0, 255] -> float32 in [-1, 1] (the published model's input range)."""
  return (np.asarray(frames, np.float32) / 255.0 * 2.0 - 1.0).astype(np.float32)


def stack(examples: Sequence[dict]) -> dict:
  """Examples {'frames' [2, H, W, 3] in [0, 255], 'flow' [H, W, 2], 'valid' [H, W]} of one
  size -> a batch (frames normalized to [-1, 1])."""
  return {'frames': normalize(np.stack([e['frames'] for e in examples])),
          'flow': np.stack([e['flow'] for e in examples]).astype(np.float32),
          'valid': np.stack([e['valid'] for e in examples])}


def zero_batch(batch_size: int, size: Tuple[int, int]) -> dict:
  """A batch of zeros (all pixels valid) of batch_size pairs of size (H, W)."""
  size = tuple(size)
  return {'frames': np.zeros((batch_size, 2) + size + (3,), np.float32),
          'flow': np.zeros((batch_size,) + size + (2,), np.float32),
          'valid': np.ones((batch_size,) + size, bool)}


def check_source(source: str, *, name: str) -> None:
  if source not in SOURCES:
    raise ValueError(f'{name} must be one of {SOURCES}, got {source!r}.')


def dataset_pairs(source: str, root: str, *, name: str) -> List[flow_formats.FlowPair]:
  """The pairs of dataset `source` under `root`; `name` is root's config field."""
  if not root:
    raise ValueError(f'{name}: source {source!r} needs the dataset folder '
                     f'(--config.{name}=PATH).')
  return flow_formats.DATASETS[source](root)


def train_batches(*, source: str, root: str, seed: int, batch_size: int,
                  out_size: Sequence[int], margin: int, max_displacement: float,
                  scale_range: Tuple[float, float] = (1.0, 1.0), flip: bool = True,
                  photometric: float = 1.0,
                  root_name: str = 'data.root') -> Callable[[int], dict]:
  """`step -> batch` of batch_size augmented crops of out_size = (H, W).

  procedural: example j of batch `step` is pair step * batch_size + j of `seed`, made
  (H + margin, W + margin) with translations up to max_displacement pixels. Datasets:
  examples drawn epoch by epoch (data/sampling.py). Augmentation is seeded by
  (seed, step, j), so a batch is a pure function of (seed, step).
  """
  check_source(source, name='data.source')
  tile = tuple(out_size)
  augment = functools.partial(flow_augment.augment, out_size=tile,
                              scale_range=tuple(scale_range), flip=flip,
                              photometric_strength=photometric)
  if source == 'procedural':
    def example(step: int, j: int) -> dict:
      index = step * batch_size + j
      pair = procedural_flow.make_pair(
          seed=seed, index=index, height=tile[0] + margin, width=tile[1] + margin,
          max_displacement=max_displacement)
      return augment(pair, np.random.default_rng([seed, index, 7]))
  else:
    pairs = dataset_pairs(source, root, name=root_name)

    def example(step: int, j: int) -> dict:
      idx = sampling.batch_indices(seed=seed, step=step, batch_size=batch_size,
                                   num_examples=len(pairs))[j]
      return augment(flow_formats.load_pair(pairs[idx]),
                     np.random.default_rng([seed, step, j, 7]))

  def train_batch(step: int) -> dict:
    return stack([example(step, j) for j in range(batch_size)])

  return train_batch


def eval_examples(*, source: str, root: str, seed: int, num_eval: int,
                  size: Sequence[int], max_displacement: float,
                  root_name: str = 'data.eval_root') -> Iterator[dict]:
  """The eval pairs, unaugmented: procedural, num_eval pairs of `size` = (H, W) from
  seed + EVAL_SEED_OFFSET; a dataset, every pair under `root` (its own sizes)."""
  check_source(source, name='data.eval_source')
  if source == 'procedural':
    for i in range(num_eval):
      yield procedural_flow.make_pair(
          seed=seed + EVAL_SEED_OFFSET, index=i, height=size[0], width=size[1],
          max_displacement=max_displacement)
  else:
    for pair in dataset_pairs(source, root, name=root_name):
      yield flow_formats.load_pair(pair)


def eval_batches(examples: Iterable[dict], batch_size: int) -> Iterator[dict]:
  """Batches of at most batch_size consecutive examples of one image size."""
  group = []
  for example in examples:
    if group and (len(group) == batch_size or
                  group[0]['flow'].shape != example['flow'].shape):
      yield stack(group)
      group = []
    group.append(example)
  if group:
    yield stack(group)
