"""Clip windows: frames and audio of one time span, short clips refused or padded."""

import os

import numpy as np
import pytest

from perceiver_agents.data import clips, media


def _clip(num_frames=6, per_frame=4):
  frames = np.arange(num_frames, dtype=np.uint8)[:, None, None, None] * np.ones(
      (1, 2, 2, 3), np.uint8)
  audio = np.arange(num_frames * per_frame, dtype=np.float32) / 100.0
  return frames, audio


def test_window_takes_frames_and_their_audio():
  frames, audio = _clip()
  out = clips.window(frames, audio, first_frame=2, num_frames=3, audio_samples_per_frame=4,
                     pad_short=False, name='c.mp4')
  assert out['image'].shape == (3, 2, 2, 3) and out['image'].dtype == np.float32
  np.testing.assert_array_equal(out['image'][:, 0, 0, 0], np.float32([2, 3, 4]) / np.float32(255))
  assert out['audio'].shape == (12, 1) and out['audio'].dtype == np.float32
  np.testing.assert_array_equal(out['audio'][:, 0], audio[8:20])
  assert clips.num_windows(6, 3) == 4 and clips.num_windows(2, 3) == 1


def test_short_window_is_refused_by_name_or_padded():
  frames, audio = _clip()
  with pytest.raises(ValueError, match='c.mp4: has 2 entries, shorter than the model window'):
    clips.window(frames, audio, first_frame=4, num_frames=3, audio_samples_per_frame=4,
                 pad_short=False, name='c.mp4')
  out = clips.window(frames, audio, first_frame=4, num_frames=3, audio_samples_per_frame=4,
                     pad_short=True, name='c.mp4')
  np.testing.assert_array_equal(out['image'][:, 0, 0, 0], np.float32([4, 5, 5]) / np.float32(255))
  np.testing.assert_array_equal(out['audio'][8:, 0], 0.0)   # Silence after the clip.
  np.testing.assert_array_equal(out['audio'][:8, 0], audio[16:])


def test_decode_without_audio_is_an_error_or_silence(tmp_path):
  path = os.path.join(tmp_path, 'silent.mkv')
  media.write_video(path, np.zeros((8, 16, 16, 3), np.uint8), 25)
  kwargs = dict(fps=25, size=16, sample_rate=16000, audio_samples_per_frame=640)
  with pytest.raises(ValueError, match='no audio stream'):
    clips.decode(path, **kwargs)
  frames, audio = clips.decode(path, silent_if_no_audio=True, max_frames=4, **kwargs)
  assert frames.shape == (4, 16, 16, 3) and audio.shape == (4 * 640,) and not audio.any()
