"""Log-mel spectrograms: shapes, frame count, and a tone landing in the right band."""

import numpy as np
import pytest

from perceiver_agents.data import audio_features


def test_shape_and_frame_count():
  audio = np.zeros(16000, np.float32)
  mel = audio_features.log_mel_spectrogram(audio, sample_rate=16000, num_mels=40)
  assert mel.shape == (1 + (16000 - 400) // 160, 40)  # 25 ms / 10 ms at 16 kHz.
  assert audio_features.num_frames(16000, sample_rate=16000) == mel.shape[0]
  np.testing.assert_allclose(mel, np.log(1e-6), rtol=1e-5)  # Silence: log(eps).


def test_tone_peaks_in_its_mel_band():
  rate, hz = 16000, 1000.0
  t = np.arange(rate) / rate
  mel = audio_features.log_mel_spectrogram(np.sin(2 * np.pi * hz * t), sample_rate=rate,
                                           num_mels=64)
  centres = audio_features.mel_to_hz(np.linspace(
      0, audio_features.hz_to_mel(rate / 2), 66))[1:-1]
  expected = int(np.argmin(np.abs(centres - hz)))
  assert abs(int(np.argmax(mel.mean(0))) - expected) <= 1


def test_filterbank_peaks_at_one_and_errors():
  bank = audio_features.mel_filterbank(num_mels=8, fft_size=512, sample_rate=16000)
  assert bank.shape == (257, 8) and bank.max() <= 1.0 and bank.max(0).min() > 0.5
  with pytest.raises(ValueError, match='shorter than one'):
    audio_features.log_mel_spectrogram(np.zeros(100), sample_rate=16000)
  with pytest.raises(ValueError, match='mono'):
    audio_features.log_mel_spectrogram(np.zeros((1000, 2)), sample_rate=16000)
  with pytest.raises(ValueError, match='fmax'):
    audio_features.mel_filterbank(num_mels=8, fft_size=512, sample_rate=16000, fmax=9000)
