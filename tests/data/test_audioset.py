"""AudioSet segment CSVs, class labels, file lookup and class-balanced sampling."""

import numpy as np
import pytest

from perceiver_agents.data import audioset, media

SEGMENTS = '''# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4
# YTID, start_seconds, end_seconds, positive_labels
--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"
--ZhevVpy1s, 50.000, 60.000, "/m/012xff"
--aE2O5G5WE, 0.000, 10.000, "/m/03fwl"
'''
LABELS = '''index,mid,display_name
0,/m/09x0r,"Speech"
1,/t/dd00088,"Gush"
2,/m/012xff,"Toothbrush"
3,/m/03fwl,"Goat"
'''


def test_reads_published_formats_and_finds_files(tmp_path):
  (tmp_path / 'seg.csv').write_text(SEGMENTS)
  (tmp_path / 'labels.csv').write_text(LABELS)
  segments = audioset.read_segments(str(tmp_path / 'seg.csv'))
  assert segments[0] == audioset.Segment('--PJHxphWEs', 30.0, 40.0,
                                         ('/m/09x0r', '/t/dd00088'))
  mids, names = audioset.read_class_labels(str(tmp_path / 'labels.csv'))
  assert mids[3] == '/m/03fwl' and names[1] == 'Gush'
  audio = tmp_path / 'audio' / 'sub'
  audio.mkdir(parents=True)
  tone = np.zeros(800, np.float32)
  media.write_wav(str(audio / '--PJHxphWEs.wav'), tone, 8000)       # <YTID>.wav
  media.write_wav(str(audio / 'Y--aE2O5G5WE.wav'), tone, 8000)      # Y<YTID>.wav
  source = audioset.AudioSetSource(segments_csv=str(tmp_path / 'seg.csv'),
                                   class_labels_csv=str(tmp_path / 'labels.csv'),
                                   audio_root=str(tmp_path / 'audio'))
  assert len(source) == 2 and source.num_missing == 1
  np.testing.assert_array_equal(source.labels, [[1, 1, 0, 0], [0, 0, 0, 1]])


def test_bad_rows_and_unknown_labels(tmp_path):
  (tmp_path / 'labels.csv').write_text(LABELS)
  (tmp_path / 'seg.csv').write_text('abcdefghijk, 1.0, 2.0\n')
  with pytest.raises(ValueError, match=r'seg.csv:1: expected 4 fields'):
    audioset.read_segments(str(tmp_path / 'seg.csv'))
  (tmp_path / 'seg.csv').write_text('abcdefghijk, 1.0, 11.0, "/m/unknown"\n')
  (tmp_path / 'a').mkdir()
  media.write_wav(str(tmp_path / 'a' / 'abcdefghijk.wav'), np.zeros(10), 8000)
  with pytest.raises(ValueError, match="label '/m/unknown' is not in the class labels"):
    audioset.AudioSetSource(segments_csv=str(tmp_path / 'seg.csv'),
                            class_labels_csv=str(tmp_path / 'labels.csv'),
                            audio_root=str(tmp_path / 'a'))


def test_balanced_indices_are_deterministic_and_balanced():
  labels = np.zeros((100, 3), np.float32)
  labels[:90, 0] = 1   # Class 0 is common,
  labels[90:98, 1] = 1  # class 1 rare,
  labels[98:, 2] = 1   # class 2 very rare.
  a = audioset.balanced_indices(labels, seed=0, step=5, batch_size=3000)
  np.testing.assert_array_equal(a, audioset.balanced_indices(labels, seed=0, step=5,
                                                             batch_size=3000))
  assert not np.array_equal(a, audioset.balanced_indices(labels, seed=0, step=6,
                                                         batch_size=3000))
  counts = labels[a].sum(0) / len(a)
  np.testing.assert_allclose(counts, [1 / 3] * 3, atol=0.04)
  with pytest.raises(ValueError, match='no class has a positive'):
    audioset.balanced_indices(np.zeros((4, 2)), seed=0, step=0, batch_size=2)
