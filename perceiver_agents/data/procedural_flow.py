"""Procedural optical flow: textured layers moving with known motion over a moving background.

Every pair is a pure function of (seed, index): `make_pair(seed=s, index=i, ...)` always
returns the same frames and flow, so a training stream and a held-out stream are just two
seeds, and a run's data position is its step.

A scene is a background plus `num_layers` shapes (ellipses and rotated rectangles), each
with its own texture: a sum of oriented sinusoids with 1/f amplitudes (edges and texture at
many scales, so flow is locally identifiable). Each layer moves by a similarity transform
about its centre, A(p) = c + t + s R(θ) (p - c), with |t| <= max_displacement. Frame 1 shows
every layer at rest, frame 2 every layer moved; since textures and shapes are analytic
functions of position, frame 2 is rendered exactly (no resampling). The flow of a frame-1
pixel is A(p) - p of the topmost layer covering it (also where it becomes occluded).
"""

from typing import Tuple

import numpy as np

_NUM_WAVES = 12


def _texture_params(rng: np.random.Generator, size: float) -> dict:
  freqs = np.exp(rng.uniform(np.log(1.5 / size), np.log(0.45), _NUM_WAVES))  # cycles / px
  angles = rng.uniform(0, np.pi, _NUM_WAVES)
  return {
      'k': 2 * np.pi * freqs[:, None] * np.stack([np.cos(angles), np.sin(angles)], -1),
      'phase': rng.uniform(0, 2 * np.pi, (_NUM_WAVES, 3)),
      'amp': rng.uniform(0.3, 1.0, (_NUM_WAVES, 3)) / np.sqrt(freqs * size)[:, None],
      'base': rng.uniform(0.15, 0.85, 3),
      'contrast': rng.uniform(0.15, 0.35),
  }


def _texture(params: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Colour [H, W, 3] in [0, 1] of the texture at positions x, y [H, W]."""
  arg = x[..., None] * params['k'][:, 0] + y[..., None] * params['k'][:, 1]  # [H, W, K]
  # sum_k amp sin(arg + phase) = sin(arg) @ (amp cos phase) + cos(arg) @ (amp sin phase).
  signal = (np.sin(arg) @ (params['amp'] * np.cos(params['phase'])) +
            np.cos(arg) @ (params['amp'] * np.sin(params['phase'])))          # [H, W, 3]
  signal /= np.sqrt(np.sum(params['amp']**2, axis=0) / 2)
  return np.clip(params['base'] + params['contrast'] * signal, 0.0, 1.0)


def _shape_params(rng: np.random.Generator, height: int, width: int) -> dict:
  size = min(height, width)
  return {'kind': rng.integers(2),  # 0 ellipse, 1 rectangle
          'center': np.array([rng.uniform(0, width), rng.uniform(0, height)]),
          'radii': rng.uniform(0.12, 0.4, 2) * size,
          'angle': rng.uniform(0, np.pi)}


def _coverage(shape: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Soft (1-pixel anti-aliased) coverage [H, W] in [0, 1] of a shape at layer coords."""
  c, s = np.cos(shape['angle']), np.sin(shape['angle'])
  dx, dy = x - shape['center'][0], y - shape['center'][1]
  u, v = (c * dx + s * dy) / shape['radii'][0], (-s * dx + c * dy) / shape['radii'][1]
  if shape['kind'] == 0:
    norm = np.sqrt(u**2 + v**2)
  else:
    norm = np.maximum(np.abs(u), np.abs(v))
  distance = (1.0 - norm) * np.min(shape['radii'])  # ~ pixels inside the boundary
  return np.clip(distance + 0.5, 0.0, 1.0)


def _motion(rng: np.random.Generator, center: np.ndarray, max_displacement: float,
            max_rotation: float, max_scale_change: float) -> dict:
  radius = max_displacement * np.sqrt(rng.uniform())
  direction = rng.uniform(0, 2 * np.pi)
  return {'center': center,
          't': radius * np.array([np.cos(direction), np.sin(direction)]),
          'theta': rng.uniform(-max_rotation, max_rotation),
          'scale': np.exp(rng.uniform(-max_scale_change, max_scale_change))}


def _forward(m: dict, x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  c, s = np.cos(m['theta']), np.sin(m['theta'])
  dx, dy = x - m['center'][0], y - m['center'][1]
  return (m['center'][0] + m['t'][0] + m['scale'] * (c * dx - s * dy),
          m['center'][1] + m['t'][1] + m['scale'] * (s * dx + c * dy))


def _inverse(m: dict, x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  c, s = np.cos(m['theta']), np.sin(m['theta'])
  dx, dy = x - m['center'][0] - m['t'][0], y - m['center'][1] - m['t'][1]
  return (m['center'][0] + (c * dx + s * dy) / m['scale'],
          m['center'][1] + (-s * dx + c * dy) / m['scale'])


def make_pair(*, seed: int, index: int, height: int, width: int,
              max_displacement: float = 4.0, max_layers: int = 4,
              max_rotation: float = 0.05, max_scale_change: float = 0.05) -> dict:
  """Pair `index` of the stream `seed`.

  Returns:
    {'frames': uint8 [2, H, W, 3], 'flow': float32 [H, W, 2] (u, v) in pixels,
     'valid': bool [H, W] (all True)}.
  """
  if height < 4 or width < 4:
    raise ValueError(f'height and width must be >= 4, got {height}x{width}.')
  if max_displacement < 0:
    raise ValueError(f'max_displacement must be >= 0, got {max_displacement}.')
  if index < 0:
    raise ValueError(f'index must be >= 0, got {index}.')
  rng = np.random.default_rng([seed, index])
  size = float(min(height, width))
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  centre = np.array([width / 2, height / 2])
  layers = [(None, _texture_params(rng, size),
             _motion(rng, centre, max_displacement, max_rotation, max_scale_change))]
  for _ in range(rng.integers(min(1, max_layers), max_layers + 1)):
    shape = _shape_params(rng, height, width)
    layers.append((shape, _texture_params(rng, size),
                   _motion(rng, shape['center'], max_displacement, max_rotation,
                           max_scale_change)))

  frames = np.zeros((2, height, width, 3))
  flow = np.zeros((height, width, 2))
  for shape, texture, motion in layers:
    # Frame 1: the layer at rest. Frame 2: the layer moved (sampled through A^-1).
    for t, (lx, ly) in enumerate(((x, y), _inverse(motion, x, y))):
      alpha = np.ones_like(x) if shape is None else _coverage(shape, lx, ly)
      frames[t] = frames[t] * (1 - alpha[..., None]) + alpha[..., None] * _texture(texture, lx, ly)
      if t == 0:
        fx, fy = _forward(motion, x, y)
        on_top = alpha >= 0.5
        flow[on_top] = np.stack([fx - x, fy - y], -1)[on_top]
  return {'frames': np.round(frames * 255).astype(np.uint8),
          'flow': flow.astype(np.float32),
          'valid': np.ones((height, width), bool)}
