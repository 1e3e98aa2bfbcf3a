"""The standard optical-flow colour wheel (Baker et al., Middlebury): hue = direction,
saturation = speed.

`flow_to_rgb(flow)` maps flow [H, W, 2] to uint8 [H, W, 3]: zero motion is white, a flow of
the largest magnitude (or `max_flow`) is the fully saturated colour of its direction
(right = red, down = yellow, left = cyan-blue, up = violet).
"""

from typing import Optional

import numpy as np

# Number of hues between the six primary/secondary colours, as in the Middlebury code.
_SEGMENTS = (('RY', 15), ('YG', 6), ('GC', 4), ('CB', 11), ('BM', 13), ('MR', 6))


def color_wheel() -> np.ndarray:
  """The 55 colours of the wheel, float [55, 3] in [0, 255], starting at red."""
  ramps = []
  for name, n in _SEGMENTS:
    ramp = np.arange(n) / n
    start = {'R': (255, 0, 0), 'Y': (255, 255, 0), 'G': (0, 255, 0), 'C': (0, 255, 255),
             'B': (0, 0, 255), 'M': (255, 0, 255)}
    a, b = np.array(start[name[0]], float), np.array(start[name[1]], float)
    ramps.append(a + ramp[:, None] * (b - a))
  return np.concatenate(ramps)


def flow_to_rgb(flow: np.ndarray, *, max_flow: Optional[float] = None) -> np.ndarray:
  """Colour-codes flow [H, W, 2] (u, v) -> uint8 [H, W, 3]."""
  flow = np.asarray(flow, np.float64)
  if flow.ndim != 3 or flow.shape[-1] != 2:
    raise ValueError(f'flow must be [H, W, 2], got shape {flow.shape}.')
  u, v = np.nan_to_num(flow[..., 0]), np.nan_to_num(flow[..., 1])
  radius = np.sqrt(u**2 + v**2)
  scale = float(max_flow) if max_flow else float(radius.max())
  scale = max(scale, 1e-9)
  u, v, radius = u / scale, v / scale, np.minimum(radius / scale, 1.0)
  wheel = color_wheel()
  n = len(wheel)
  angle = np.arctan2(-v, -u) / np.pi                   # (-1, 1]; right (u > 0) -> 1
  position = (angle + 1) / 2 * (n - 1)
  k0 = np.floor(position).astype(int)
  k1 = (k0 + 1) % n
  frac = (position - k0)[..., None]
  colour = (1 - frac) * wheel[k0] + frac * wheel[k1]   # [H, W, 3], saturated
  colour = 255 - radius[..., None] * (255 - colour)    # towards white at small speeds
  return np.clip(np.round(colour), 0, 255).astype(np.uint8)
