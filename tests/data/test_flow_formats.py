"""Flow file formats and dataset layouts: write small files in each real format, read back."""

import os

import numpy as np
import pytest
from PIL import Image

from perceiver_agents.data import flow_formats


def _flow(h=5, w=7, seed=0):
  return np.random.default_rng(seed).normal(0, 10, (h, w, 2)).astype(np.float32)


def _png(path, h=5, w=7, seed=0, mode='RGB'):
  rng = np.random.default_rng(seed)
  shape = (h, w, 3) if mode == 'RGB' else (h, w)
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def test_flo_round_trip_and_layout(tmp_path):
  flow = _flow()
  path = str(tmp_path / 'a.flo')
  flow_formats.write_flo(path, flow)
  raw = open(path, 'rb').read()
  assert len(raw) == 12 + 5 * 7 * 2 * 4
  assert np.frombuffer(raw[:4], '<f4')[0] == np.float32(202021.25)
  assert tuple(np.frombuffer(raw[4:12], '<i4')) == (7, 5)  # width, then height
  assert np.frombuffer(raw[12:20], '<f4').tolist() == flow[0, 0].tolist()  # u, v interleaved
  np.testing.assert_array_equal(flow_formats.read_flo(path), flow)


def test_flo_bad_magic_names_file(tmp_path):
  path = str(tmp_path / 'bad.flo')
  flow_formats.write_flo(path, _flow())
  raw = bytearray(open(path, 'rb').read())
  raw[:4] = np.float32(1.5).tobytes()
  open(path, 'wb').write(bytes(raw))
  with pytest.raises(ValueError, match=r'bad\.flo.*magic'):
    flow_formats.read_flo(path)


@pytest.mark.parametrize('keep', [3, 12, 12 + 8 * 30])
def test_flo_truncated_names_file(tmp_path, keep):
  path = str(tmp_path / 'cut.flo')
  flow_formats.write_flo(path, _flow())
  open(path, 'r+b').truncate(keep)
  with pytest.raises(ValueError, match=r'cut\.flo.*(truncated|shorter)'):
    flow_formats.read_flo(path)


def test_kitti_png_round_trip(tmp_path):
  flow = np.round(_flow() * 64) / 64   # KITTI stores 1/64 px steps.
  valid = np.random.default_rng(1).uniform(size=flow.shape[:2]) > 0.3
  path = str(tmp_path / '000000_10.png')
  flow_formats.write_kitti_flow(path, flow, valid)
  with Image.open(path) as image:   # A real 16-bit RGB PNG.
    assert image.format == 'PNG'
  import tensorflow as tf
  raw = tf.io.decode_png(open(path, 'rb').read(), channels=3, dtype=tf.uint16).numpy()
  np.testing.assert_array_equal(raw[..., 2], valid.astype(np.uint16))
  np.testing.assert_array_equal(raw[..., 0], (flow[..., 0] * 64 + 2**15).astype(np.uint16))
  got, got_valid = flow_formats.read_kitti_flow(path)
  np.testing.assert_array_equal(got_valid, valid)
  np.testing.assert_allclose(got[valid], flow[valid], atol=1e-6)
  assert np.all(got[~valid] == 0)


def test_kitti_not_png(tmp_path):
  path = tmp_path / 'x.png'
  path.write_bytes(b'not a png at all')
  with pytest.raises(ValueError, match='x.png'):
    flow_formats.read_kitti_flow(str(path))


def test_read_image_rejects_grayscale(tmp_path):
  path = str(tmp_path / 'grey.png')
  _png(path, mode='L')
  with pytest.raises(ValueError, match=r'grey\.png.*grayscale'):
    flow_formats.read_image(path)


def test_sintel_layout(tmp_path):
  root = tmp_path / 'Sintel'
  for scene in ('alley_1', 'bamboo_2'):
    os.makedirs(root / 'training' / 'clean' / scene)
    os.makedirs(root / 'training' / 'flow' / scene)
    for i in (1, 2, 3):
      _png(str(root / 'training' / 'clean' / scene / f'frame_{i:04d}.png'), seed=i)
    for i in (1, 2):
      flow_formats.write_flo(str(root / 'training' / 'flow' / scene / f'frame_{i:04d}.flo'),
                             _flow(seed=i))
  pairs = flow_formats.sintel_pairs(str(root), dstype='clean')
  assert len(pairs) == 4
  assert pairs[1].frame1.endswith('alley_1/frame_0002.png')
  assert pairs[1].frame2.endswith('alley_1/frame_0003.png')
  example = flow_formats.load_pair(pairs[1])
  assert example['frames'].shape == (2, 5, 7, 3) and example['frames'].dtype == np.uint8
  np.testing.assert_array_equal(example['flow'], _flow(seed=2))
  assert example['valid'].all()
  with pytest.raises(ValueError, match=r'training/final: missing'):
    flow_formats.sintel_pairs(str(root), dstype='final')


def test_kitti_layout(tmp_path):
  root = tmp_path / 'kitti'
  os.makedirs(root / 'training' / 'image_2')
  os.makedirs(root / 'training' / 'flow_occ')
  for stem in ('000000', '000001'):
    _png(str(root / 'training' / 'image_2' / f'{stem}_10.png'))
    _png(str(root / 'training' / 'image_2' / f'{stem}_11.png'), seed=3)
    flow_formats.write_kitti_flow(str(root / 'training' / 'flow_occ' / f'{stem}_10.png'),
                                  np.ones((5, 7, 2)), np.eye(5, 7, dtype=bool))
  pairs = flow_formats.kitti_pairs(str(root))
  assert [os.path.basename(p.frame2) for p in pairs] == ['000000_11.png', '000001_11.png']
  example = flow_formats.load_pair(pairs[0])
  np.testing.assert_array_equal(example['valid'], np.eye(5, 7, dtype=bool))
  assert np.all(example['flow'][~example['valid']] == 0)
  with pytest.raises(ValueError, match='missing KITTI training/image_2'):
    flow_formats.kitti_pairs(str(tmp_path / 'nowhere'))


def test_chairs_layout_and_split(tmp_path):
  data = tmp_path / 'FlyingChairs' / 'data'
  os.makedirs(data)
  for i in (1, 2, 3):
    for j in (1, 2):
      Image.fromarray(np.full((5, 7, 3), 10 * i + j, np.uint8)).save(
          str(data / f'{i:05d}_img{j}.ppm'))
    flow_formats.write_flo(str(data / f'{i:05d}_flow.flo'), _flow(seed=i))
  (tmp_path / 'FlyingChairs' / 'FlyingChairs_train_val.txt').write_text('1\n2\n1\n')
  root = str(tmp_path / 'FlyingChairs')
  assert len(flow_formats.chairs_pairs(root)) == 3
  val = flow_formats.chairs_pairs(root, split='val')
  assert len(val) == 1 and val[0].frame1.endswith('00002_img1.ppm')
  example = flow_formats.load_pair(val[0])
  assert example['frames'][0, 0, 0, 0] == 21 and example['frames'][1, 0, 0, 0] == 22


def test_frames_of_different_sizes_name_file(tmp_path):
  _png(str(tmp_path / 'a.png'), h=5, w=7)
  _png(str(tmp_path / 'b.png'), h=6, w=7)
  flow_formats.write_flo(str(tmp_path / 'f.flo'), _flow())
  pair = flow_formats.FlowPair(str(tmp_path / 'a.png'), str(tmp_path / 'b.png'),
                               str(tmp_path / 'f.flo'))
  with pytest.raises(ValueError, match=r'b\.png.*differs'):
    flow_formats.load_pair(pair)
