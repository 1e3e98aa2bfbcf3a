"""Procedural flow pairs: pure in (seed, index), and frame 2 really is frame 1 moved by flow."""

import numpy as np
import pytest
from scipy import ndimage

from perceiver_agents.data import flow_augment, flow_viz, procedural_flow


def _pair(index=0, seed=0, **kwargs):
  kwargs = {'height': 40, 'width': 48, 'max_displacement': 4.0, **kwargs}
  return procedural_flow.make_pair(seed=seed, index=index, **kwargs)


def test_pure_function_of_seed_and_index():
  a, b = _pair(index=3), _pair(index=3)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(_pair(index=4)['frames'], a['frames'])
  assert not np.array_equal(_pair(index=3, seed=1)['frames'], a['frames'])


def test_shapes_and_ranges():
  pair = _pair(max_displacement=3.0, max_scale_change=0.0, max_rotation=0.0)
  assert pair['frames'].shape == (2, 40, 48, 3) and pair['frames'].dtype == np.uint8
  assert pair['flow'].shape == (40, 48, 2) and pair['flow'].dtype == np.float32
  assert np.all(np.linalg.norm(pair['flow'], axis=-1) <= 3.0 + 1e-4)
  assert pair['frames'].std() > 10   # textured, not flat


def test_frame2_warped_back_by_flow_matches_frame1():
  errors, unwarped = [], []
  for index in range(6):
    pair = _pair(index=index)
    f1, f2 = pair['frames'].astype(np.float64)
    y, x = np.mgrid[0:40, 0:48]
    coords = [y + pair['flow'][..., 1], x + pair['flow'][..., 0]]
    warped = np.stack([ndimage.map_coordinates(f2[..., c], coords, order=1, mode='nearest')
                       for c in range(3)], -1)
    errors.append(np.median(np.abs(warped - f1)))
    unwarped.append(np.median(np.abs(f2 - f1)))
  assert np.mean(errors) < 0.25 * np.mean(unwarped)


def test_augment_crop_flip_keeps_flow_consistent():
  pair = _pair(max_rotation=0.0, max_scale_change=0.0)
  out = flow_augment.augment(pair, np.random.default_rng(0), out_size=(24, 32),
                             photometric_strength=0.0)
  assert out['frames'].shape == (2, 24, 32, 3) and out['flow'].shape == (24, 32, 2)
  same = flow_augment.augment(pair, np.random.default_rng(0), out_size=(24, 32))
  again = flow_augment.augment(pair, np.random.default_rng(0), out_size=(24, 32))
  np.testing.assert_array_equal(same['frames'], again['frames'])
  assert same['frames'].min() >= 0 and same['frames'].max() <= 255
  # Left-right flip negates u: every crop's flow values come from the pair's, with u
  # possibly negated, never v.
  for seed in range(8):
    out = flow_augment.augment(pair, np.random.default_rng(seed), out_size=(24, 32),
                               photometric_strength=0.0, flip=True)
    us = set(np.round(np.abs(pair['flow'][..., 0]), 4).ravel())
    assert set(np.round(np.abs(out['flow'][..., 0]), 4).ravel()) <= us


def test_augment_scale_multiplies_flow():
  pair = {'frames': np.zeros((2, 20, 20, 3), np.uint8),
          'flow': np.full((20, 20, 2), 2.0, np.float32), 'valid': np.ones((20, 20), bool)}
  out = flow_augment.augment(pair, np.random.default_rng(0), out_size=(20, 20),
                             scale_range=(2.0, 2.0), flip=False, photometric_strength=0.0)
  np.testing.assert_allclose(out['flow'], 4.0, rtol=1e-5)


def test_augment_rejects_small_examples():
  with pytest.raises(ValueError, match='smaller than the crop'):
    flow_augment.augment(_pair(), np.random.default_rng(0), out_size=(64, 64))


def test_colour_wheel_directions():
  flow = np.zeros((3, 3, 2), np.float32)
  flow[0, 0] = (1, 0)    # right
  flow[0, 1] = (-1, 0)   # left
  flow[0, 2] = (0, 1)    # down
  rgb = flow_viz.flow_to_rgb(flow).astype(int)
  assert rgb.shape == (3, 3, 3) and rgb.dtype == np.int64
  assert tuple(rgb[1, 1]) == (255, 255, 255)          # no motion: white
  assert rgb[0, 0, 0] == 255 and rgb[0, 0, 1] < 40     # right: red
  assert rgb[0, 1, 0] < 40 and rgb[0, 1, 2] > 200      # left: cyan-blue
  assert rgb[0, 2, 0] > 200 and rgb[0, 2, 1] > 150 and rgb[0, 2, 2] < 40  # down: yellow
  assert len(flow_viz.color_wheel()) == 55
