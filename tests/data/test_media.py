"""Real media files through PyAV: write, decode, re-time, resample, and the bad inputs."""

import os

import numpy as np
import pytest

from perceiver_agents.data import media

FPS, SIZE, SR = 10, 32, 16000


def _moving_bar(num_frames=10):
  frames = np.zeros((num_frames, SIZE, SIZE, 3), np.uint8)
  for t in range(num_frames):
    frames[t, :, 2 * t:2 * t + 4] = 255  # A white bar moving 2 px per frame.
  return frames


def _tone(seconds, hz=440.0, rate=SR):
  t = np.arange(int(seconds * rate)) / rate
  return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _peak_hz(audio, rate):
  spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
  return np.argmax(spectrum) * rate / len(audio)


def _bar_column(frame):
  return int(np.argmax(frame[SIZE // 2, :, 0] > 128))


@pytest.mark.parametrize('extension', ['.mp4', '.mkv'])
def test_video_with_audio_round_trip(tmp_path, extension):
  path = str(tmp_path / f'clip{extension}')
  media.write_video(path, _moving_bar(), FPS, audio=_tone(1.0), sample_rate=SR)
  info = media.probe(path)
  assert info['has_video'] and info['has_audio'] and info['sample_rate'] == SR
  frames = media.read_video(path, fps=FPS)
  assert frames.shape == (10, SIZE, SIZE, 3) and frames.dtype == np.uint8
  assert [_bar_column(f) for f in frames] == [2 * t for t in range(10)]
  # Twice the frame rate: every source frame is shown twice.
  double = media.read_video(path, fps=2 * FPS)
  assert len(double) == 20
  assert [_bar_column(f) for f in double] == [2 * (i // 2) for i in range(20)]
  # A window, resized: frames 3..6.
  window = media.read_video(path, fps=FPS, start=0.3, duration=0.4, size=16)
  assert window.shape == (4, 16, 16, 3)
  for rate in (SR, 48000):
    audio = media.read_audio(path, sample_rate=rate)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - rate) < 0.1 * rate  # ~1 s (AAC may pad its last frame).
    assert abs(_peak_hz(audio[:rate // 2], rate) - 440.0) < 5.0


def test_wav_round_trip_and_sample_rate_mismatch(tmp_path):
  path = str(tmp_path / 'tone.wav')
  tone = _tone(0.5, rate=8000)
  media.write_wav(path, tone, 8000)
  same = media.read_audio(path, sample_rate=8000, resample=False)
  np.testing.assert_allclose(same, tone, atol=1e-4)
  up = media.read_audio(path, sample_rate=16000)
  assert len(up) == 8000 and abs(_peak_hz(up, 16000) - 440.0) < 5.0
  with pytest.raises(ValueError, match=r'tone.wav: audio is sampled at 8000 Hz.*16000'):
    media.read_audio(path, sample_rate=16000, resample=False)
  with pytest.raises(ValueError, match='no video stream'):
    media.read_video(path, fps=10)
  with pytest.raises(ValueError, match='no audio samples in the window'):
    media.read_audio(path, sample_rate=8000, start=2.0)


def test_bad_files_raise_clear_errors(tmp_path):
  empty = tmp_path / 'empty.mp4'
  empty.write_bytes(b'')
  garbage = tmp_path / 'garbage.mp4'
  garbage.write_bytes(os.urandom(2000))
  silent = str(tmp_path / 'silent.mp4')
  media.write_video(silent, _moving_bar(4), FPS)
  with pytest.raises(ValueError, match='empty.mp4: file is empty'):
    media.read_video(str(empty), fps=10)
  with pytest.raises(ValueError, match='garbage.mp4: unreadable'):
    media.read_audio(str(garbage), sample_rate=SR)
  with pytest.raises(ValueError, match='no such file'):
    media.read_video(str(tmp_path / 'missing.mp4'), fps=10)
  with pytest.raises(ValueError, match='silent.mp4: has no audio stream'):
    media.read_audio(silent, sample_rate=SR)
  with pytest.raises(ValueError, match='no video frames in the window'):
    media.read_video(silent, fps=10, start=5.0)


def test_fit_length_cuts_pads_or_refuses():
  x = np.arange(5, dtype=np.float32)[:, None]
  np.testing.assert_array_equal(media.fit_length(x, 3), x[:3])
  with pytest.raises(ValueError, match=r'clip.mp4: has 5 entries, shorter than the model '
                                       r'window of 8; pass --config.data.pad_short=true'):
    media.fit_length(x, 8, name='clip.mp4')
  zeros = media.fit_length(x, 8, pad='zeros')
  assert zeros.shape == (8, 1) and np.all(zeros[5:] == 0)
  edge = media.fit_length(x, 8, pad='edge')
  assert np.all(edge[5:] == 4)
  with pytest.raises(ValueError, match='pad must be'):
    media.fit_length(x, 8, pad='wrap')


def test_write_video_checks_frames(tmp_path):
  with pytest.raises(ValueError, match='uint8'):
    media.write_video(str(tmp_path / 'a.mp4'), np.zeros((2, 8, 8, 3), np.float32), 10)
  with pytest.raises(ValueError, match='even'):
    media.write_video(str(tmp_path / 'a.mp4'), np.zeros((2, 7, 8, 3), np.uint8), 10)
