"""Kinetics annotations + video folders read through the real pipeline."""

import os

import numpy as np
import pytest

from perceiver_agents.data import kinetics, media, synthetic_media

CLASSES = ('abseiling', 'bowling')


def _source(root, **kwargs):
  args = dict(annotations=os.path.join(root, 'annotations.csv'),
              video_root=os.path.join(root, 'videos'), num_frames=4, fps=25,
              image_size=16, sample_rate=16000, audio_samples_per_frame=640)
  args.update(kwargs)
  return kinetics.KineticsSource(**args)


def test_annotations_and_windows(tmp_path):
  root = str(tmp_path)
  synthetic_media.write_kinetics_like(root, num_clips=3, classes=CLASSES, seconds=0.4,
                                      fps=25, size=32, sample_rate=16000)
  clips = kinetics.read_annotations(os.path.join(root, 'annotations.csv'))
  assert [c.label for c in clips] == ['abseiling', 'bowling', 'abseiling']
  os.remove(os.path.join(root, 'videos', 'bowling', clips[1].file_stem + '.mp4'))
  source = _source(root)
  assert len(source) == 2 and source.num_missing == 1
  assert source.classes == list(CLASSES) and list(source.labels) == [0, 0]
  assert source.num_windows(0) == 10 - 4 + 1
  batch = source.batch([0, 1], [0, 6])
  assert batch['image'].shape == (2, 4, 16, 16, 3) and batch['image'].dtype == np.float32
  assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0
  assert batch['audio'].shape == (2, 4 * 640, 1)
  assert np.abs(batch['audio']).max() > 0.1  # The tone is there.
  # Frames 6..9 are the end of the clip: one more frame is too short.
  with pytest.raises(ValueError, match=r'from frame 7\): has 3 entries, shorter than the '
                                       r'model window of 4'):
    source.window(0, 7)
  padded = _source(root, pad_short=True).window(0, 7)
  np.testing.assert_array_equal(padded['image'][3], padded['image'][2])


def test_clip_without_audio(tmp_path):
  root = str(tmp_path)
  os.makedirs(os.path.join(root, 'videos'))
  frames = np.zeros((8, 16, 16, 3), np.uint8)
  media.write_video(os.path.join(root, 'videos', 'abcdefghijk_000010_000020.mkv'), frames,
                    25)
  with open(os.path.join(root, 'annotations.csv'), 'w') as f:
    f.write('label,youtube_id,time_start,time_end,split\n'
            'bowling,abcdefghijk,10,20,train\n')
  with pytest.raises(ValueError, match='has no audio stream'):
    _source(root).window(0)
  silent = _source(root, silent_if_no_audio=True).window(0)
  assert silent['audio'].shape == (2560, 1) and not silent['audio'].any()


def test_bad_annotations_and_config(tmp_path):
  bad = tmp_path / 'bad.csv'
  bad.write_text('label,youtube_id\nx,abc\n')
  with pytest.raises(ValueError, match=r"lacks columns \['time_start', 'time_end'\]"):
    kinetics.read_annotations(str(bad))
  with pytest.raises(ValueError, match='must equal audio_samples_per_frame'):
    _source(str(tmp_path), sample_rate=48000)
  good = tmp_path / 'a.csv'
  good.write_text('label,youtube_id,time_start,time_end\nx,abcdefghijk,0,10\n')
  os.makedirs(tmp_path / 'videos')
  with pytest.raises(ValueError, match='none of the 1 clips'):
    _source(str(tmp_path), annotations=str(good))


def test_train_and_eval_batches_are_pure_in_seed_and_step(tmp_path):
  root = str(tmp_path)
  synthetic_media.write_kinetics_like(root, num_clips=3, classes=CLASSES, seconds=0.4,
                                      fps=25, size=32, sample_rate=16000)
  source = _source(root)
  batch = kinetics.train_batch(source, seed=0, step=1, batch_size=2)
  again = kinetics.train_batch(source, seed=0, step=1, batch_size=2)
  for k in batch:
    np.testing.assert_array_equal(batch[k], again[k])
  assert batch['image'].shape == (2, 4, 16, 16, 3) and batch['label'].shape == (2,)
  first = kinetics.train_batch(source, seed=0, step=1, batch_size=2, random_start=False)
  idx = kinetics.sampling.batch_indices(seed=0, step=1, batch_size=2, num_examples=3)
  np.testing.assert_array_equal(first['image'], source.batch(idx, [0, 0])['image'])
  evals = list(kinetics.eval_batches(source, batch_size=2))
  assert [len(b['label']) for b in evals] == [2, 1]
  np.testing.assert_array_equal(evals[1]['image'], source.batch([2], [0])['image'])
  assert [len(b['label']) for b in kinetics.eval_batches(source, batch_size=2,
                                                          max_clips=1)] == [1]
