"""Optical-flow task: metrics, config -> data wiring, one training run and `predict` via the CLI.

Batches: tests/data/test_flow_batches.py; tiled inference: tests/test_zoo.py."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from perceiver_agents import cli
from perceiver_agents.data import flow_batches, flow_formats, procedural_flow
from perceiver_agents.tasks import base, optical_flow

TINY = ['preset=local', 'data.num_eval=3', 'train.steps=2', 'train.log_every=1',
        'train.progress_bar=false']


def _config(extra=()):
  return base.make_config(optical_flow, TINY + list(extra))


def test_epe_and_fl_all_by_hand():
  target = jnp.zeros((1, 2, 2, 2)).at[0, 0, 0].set(jnp.array([100.0, 0.0]))
  flow = jnp.zeros((1, 2, 2, 2)).at[0, 1, 1].set(jnp.array([3.0, 4.0]))
  valid = jnp.ones((1, 2, 2), bool)
  # Errors per pixel: 100 (outlier: > 3 and > 5 of 100), 0, 0, 5 (outlier).
  np.testing.assert_allclose(optical_flow.epe(flow, target, valid), [105 / 4])
  np.testing.assert_allclose(optical_flow.fl_all(flow, target, valid), [0.5])
  only = valid.at[0, 0, 0].set(False)
  np.testing.assert_allclose(optical_flow.epe(flow, target, only), [5 / 3])
  np.testing.assert_allclose(optical_flow.fl_all(flow, target, only), [1 / 3])
  # 4 px error on a 100 px flow is no outlier (< 5%).
  big = target.at[0, 0, 0].set(jnp.array([100.0, 0.0]))
  near = big.at[0, 0, 0].set(jnp.array([104.0, 0.0]))
  np.testing.assert_allclose(optical_flow.fl_all(near, big, valid), [0.0])


def test_task_batches_are_the_configs_flow_batches():
  config = _config(['seed=3'])
  task = optical_flow.build(config)
  d = config.data
  expected = flow_batches.train_batches(
      source='procedural', root='', seed=3, batch_size=2, out_size=(8, 12), margin=4,
      max_displacement=2.0, scale_range=tuple(d.scale_range), flip=d.flip,
      photometric=d.photometric)(1)
  chex.assert_trees_all_equal(task.train_batch(1), expected)
  evals = list(task.eval_batches(2))
  assert [b['frames'].shape[0] for b in evals] == [2, 1]


def test_cli_train_then_predict_writes_colour_wheel_png_and_flo(tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  # Eval pairs of 11x17 go through tiled inference.
  assert cli.main(['train', 'optical_flow', '--workdir', workdir] +
                  ['--config.' + o for o in TINY + ['data.eval_size=(11,17)']]) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result['step'] == 2 and set(result['eval']) == {'loss', 'epe', 'fl_all'}
  assert np.isfinite(result['eval']['epe'])
  pair = procedural_flow.make_pair(seed=5, index=0, height=13, width=21,
                                   max_displacement=2.0)
  paths = [str(tmp_path / f'f{i}.png') for i in (1, 2)]
  for path, frame in zip(paths, pair['frames']):
    Image.fromarray(frame).save(path)
  out, flo = str(tmp_path / 'flow.png'), str(tmp_path / 'flow.flo')
  assert cli.main(['predict', 'optical_flow', '--checkpoint', workdir, *paths,
                   '--out', out, '--flo', flo]) == 0
  report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert report['size'] == [13, 21]
  flow = flow_formats.read_flo(flo)
  assert flow.shape == (13, 21, 2) and np.all(np.isfinite(flow))
  with Image.open(out) as image:
    assert image.mode == 'RGB' and image.size == (21, 13)
    rgb = np.asarray(image)
  from perceiver_agents.data import flow_viz
  np.testing.assert_array_equal(rgb, flow_viz.flow_to_rgb(flow))


def test_predict_bad_inputs_name_the_file(tmp_path, capsys):
  a, b, g = (str(tmp_path / n) for n in ('a.png', 'b.png', 'g.png'))
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(a)
  Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(b)
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(g)
  for frames, pattern in (([a, b], 'b.png'), ([a, g], 'g.png')):
    code = cli.main(['predict', 'optical_flow', '--checkpoint', str(tmp_path), *frames,
                     '--out', str(tmp_path / 'o.png')])
    assert code == 2
    assert pattern in capsys.readouterr().err


def test_missing_dataset_folder_is_named(tmp_path):
  config = _config(['data.source=sintel_final', f'data.root={tmp_path}/Sintel'])
  with pytest.raises(ValueError, match='Sintel/training/final: missing'):
    optical_flow.build(config)
  with pytest.raises(ValueError, match='data.root'):
    optical_flow.build(_config(['data.source=kitti']))
