"""audioset: generated WAV/MP4 files through the real pipeline, the CLI and the metrics."""

import json

import jax
import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from perceiver_agents import cli
from perceiver_agents.data import synthetic_media
from perceiver_agents.tasks import audioset, base

TINY = ['preset=local', 'train.progress_bar=false', 'train.log_every=1']


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp('audioset')
  synthetic_media.write_audioset_like(str(root / 'train'), num_segments=6, num_classes=3,
                                      seconds=0.5, seed=0, video_fps=8, video_size=16)
  synthetic_media.write_audioset_like(str(root / 'eval'), num_segments=4, num_classes=3,
                                      seconds=0.5, seed=1, video_fps=8, video_size=16)
  return root


def _overrides(root, extra=()):
  return [f'data.train_segments={root}/train/segments.csv',
          f'data.eval_segments={root}/eval/segments.csv',
          f'data.class_labels={root}/train/class_labels_indices.csv',
          f'data.audio_root={root}'] + TINY + list(extra)


def test_cli_train_eval_and_map_report(files, tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  args = ['--config.' + o for o in _overrides(files, ['train.steps=1'])]
  assert cli.main(['train', 'audioset', '--workdir', workdir] + args) == 0
  trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert trained['step'] == 1 and set(trained['eval']) == {'loss', 'lrap',
                                                           'top1_precision'}
  assert cli.main(['eval', 'audioset', '--workdir', workdir]) == 0
  evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert evaluated['eval'] == pytest.approx(trained['eval'], rel=1e-5)
  report_path = str(tmp_path / 'report.json')
  assert cli.main(['predict', 'audioset', '--checkpoint', workdir, '--out',
                   report_path]) == 0
  report = json.load(open(report_path))
  assert report['num_examples'] == 4 and 0.0 <= report['mAP'] <= 1.0
  assert np.isfinite(report['d_prime'])
  wav = str(files / 'eval' / 'audio' / 'syn01000000.wav')
  assert cli.main(['predict', 'audioset', '--checkpoint', workdir, wav]) == 0
  top = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert len(top['predictions'][0]['top5']) == 3


@pytest.mark.parametrize('extra, keys', [
    (['model.input=log_mel'], {'mel': (2, 24, 16, 1)}),
    (['model.with_video=true', 'data.video_root={root}/train/video', 'data.fps=16'],
     {'audio': (2, 4096, 1), 'video': (2, 4, 16, 16, 3)}),
])
def test_input_variants_build_and_run(files, extra, keys):
  extra = [e.format(root=files) for e in extra]
  overrides = _overrides(files, extra)
  overrides[0:2] = [f'data.train_segments={files}/train/segments.csv',
                    f'data.eval_segments={files}/train/segments.csv']
  config = base.make_config(audioset, overrides)
  task = audioset.build(config)
  batch = task.train_batch(0)
  assert {k: v.shape for k, v in batch.items() if k != 'labels'} == keys
  assert batch['labels'].shape == (2, 3)
  params, state = jax.jit(task.model.init, static_argnames='is_training')(
      jax.random.PRNGKey(0), batch, is_training=True)
  logits, _ = jax.jit(task.model.apply, static_argnames='is_training')(
      params, state, jax.random.PRNGKey(1), batch, is_training=False)
  assert logits.shape == (2, 3) and task.loss(logits, batch).shape == (2,)


def test_lrap_matches_sklearn():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(8, 5)).astype(np.float32)
  labels = (rng.uniform(size=(8, 5)) < 0.4).astype(np.float32)
  labels[:, 0] = 1.0  # Every example has a positive.
  ours = np.asarray(audioset.label_ranking_average_precision(logits, labels))
  for i in range(8):
    assert ours[i] == pytest.approx(sk_metrics.label_ranking_average_precision_score(
        labels[i:i + 1], logits[i:i + 1]), rel=1e-5)


def test_bad_inputs(files, tmp_path):
  config = base.make_config(audioset, _overrides(files))
  config.data.clip_seconds = 2.0  # Longer than the 0.5 s files.
  task = audioset.build(config)
  with pytest.raises(ValueError, match=r'syn\d+.wav \(samples\): has 8000 entries, shorter '
                                       r'than the model window of 32000'):
    task.train_batch(0)
  config.data.pad_short = True
  assert audioset.build(config).train_batch(0)['audio'].shape == (2, 32000, 1)
  config.data.clip_seconds, config.data.resample_audio = 0.256, False
  config.data.sample_rate = 8000
  with pytest.raises(ValueError, match='sampled at 16000 Hz, the model expects 8000 Hz'):
    audioset.build(config).train_batch(0)
  config.data.sample_rate, config.model.samples_per_patch = 16000, 100
  with pytest.raises(ValueError, match='not a multiple of model.samples_per_patch'):
    audioset.build(config)
  config.model.samples_per_patch, config.model.with_video = 128, True
  config.data.video_root = f'{files}/train/video'
  with pytest.raises(ValueError, match='must cover data.clip_seconds'):
    audioset.build(config)
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'syn01000000.wav').write_bytes(b'')
  config = base.make_config(audioset, _overrides(files))
  config.data.audio_root = str(empty)
  config.data.train_segments = f'{files}/eval/segments.csv'
  with pytest.raises(ValueError, match='syn01000000.wav: file is empty'):
    audioset.build(config).train_batch(0)
