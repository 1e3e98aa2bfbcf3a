"""Photometric and geometric augmentation of optical-flow examples (numpy, seeded).

An example is {'frames': uint8 [2, H, W, 3], 'flow': float32 [H, W, 2], 'valid': bool
[H, W]}. `augment(example, rng, out_size=...)` returns one of size out_size with

  photometric: brightness, contrast, saturation and gamma drawn once per pair, plus a
               small independent brightness jitter per frame, and pixel noise;
  geometric:   random scale (dense flow only; flow values scaled with the image), random
               crop to out_size, left-right and up-down flips (flow components negated).

Everything random comes from `rng` (np.random.Generator), so an example's augmentation is
a pure function of the seed that made `rng`.
"""

from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage


def _scale(example: dict, factor: float) -> dict:
  frames, flow, valid = example['frames'], example['flow'], example['valid']
  h, w = flow.shape[:2]
  nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
  zoom = (nh / h, nw / w)
  frames = np.stack([ndimage.zoom(f.astype(np.float32), zoom + (1,), order=1)
                     for f in frames])
  flow = np.stack([ndimage.zoom(flow[..., c], zoom, order=1) * zoom[1 - c] for c in range(2)],
                  -1)
  valid = ndimage.zoom(valid.astype(np.uint8), zoom, order=0).astype(bool)
  return {'frames': frames, 'flow': flow.astype(np.float32), 'valid': valid}


def photometric(frames: np.ndarray, rng: np.random.Generator, *, strength: float = 1.0
                ) -> np.ndarray:
  """Colour jitter of a pair: frames [2, H, W, 3] in [0, 255] -> float32 in [0, 255]."""
  x = frames.astype(np.float32) / 255.0
  brightness = 1.0 + strength * rng.uniform(-0.3, 0.3)
  contrast = 1.0 + strength * rng.uniform(-0.3, 0.3)
  saturation = 1.0 + strength * rng.uniform(-0.4, 0.4)
  gamma = np.exp(strength * rng.uniform(-0.2, 0.2))
  grey = x.mean(axis=-1, keepdims=True)
  x = grey + saturation * (x - grey)
  x = x.mean() + contrast * (x - x.mean())
  x = x * brightness * (1.0 + strength * rng.uniform(-0.05, 0.05, (2, 1, 1, 1)))
  x = np.clip(x, 0.0, 1.0) ** gamma
  x = x + strength * rng.uniform(0, 0.02) * rng.standard_normal(x.shape)
  return (np.clip(x, 0.0, 1.0) * 255.0).astype(np.float32)


def augment(example: dict, rng: np.random.Generator, *, out_size: Sequence[int],
            scale_range: Tuple[float, float] = (1.0, 1.0), flip: bool = True,
            photometric_strength: float = 1.0) -> dict:
  """A random crop of out_size = (h, w) with the augmentations above.

  Returns {'frames': float32 [2, h, w, 3] in [0, 255], 'flow': float32 [h, w, 2],
  'valid': bool [h, w]}. The example must be at least out_size after scaling.
  """
  h, w = out_size
  if scale_range != (1.0, 1.0):
    lo = max(scale_range[0], h / example['flow'].shape[0], w / example['flow'].shape[1])
    factor = float(np.exp(rng.uniform(np.log(lo), np.log(max(lo, scale_range[1])))))
    if abs(factor - 1.0) > 1e-3:
      example = _scale(example, factor)
  frames, flow, valid = example['frames'], example['flow'], example['valid']
  height, width = flow.shape[:2]
  if height < h or width < w:
    raise ValueError(f'example is {height}x{width}, smaller than the crop {h}x{w}.')
  y0, x0 = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
  frames = frames[:, y0:y0 + h, x0:x0 + w]
  flow = flow[y0:y0 + h, x0:x0 + w].copy()
  valid = valid[y0:y0 + h, x0:x0 + w]
  if flip and rng.uniform() < 0.5:   # left-right
    frames, flow, valid = frames[:, :, ::-1], flow[:, ::-1] * [-1, 1], valid[:, ::-1]
  if flip and rng.uniform() < 0.1:   # up-down (rarer: scenes have a gravity direction)
    frames, flow, valid = frames[:, ::-1], flow[::-1] * [1, -1], valid[::-1]
  if photometric_strength > 0:
    frames = photometric(frames, rng, strength=photometric_strength)
  return {'frames': np.ascontiguousarray(frames, np.float32),
          'flow': np.ascontiguousarray(flow, np.float32),
          'valid': np.ascontiguousarray(valid)}
