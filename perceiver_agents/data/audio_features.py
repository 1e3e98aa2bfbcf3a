"""Log-mel spectrograms in numpy: Hann-windowed STFT -> power -> HTK mel filterbank -> log.

    log_mel_spectrogram(audio [S], sample_rate, ...) -> float32 [F, num_mels]

Defaults (ours, the common audio-tagging front end): 25 ms windows every 10 ms, FFT size the
next power of two >= the window, 128 triangular mel bands between 0 Hz and sample_rate / 2
(HTK mel scale, each band's filter peaks at 1), natural log of mel power + 1e-6. The number
of frames is 1 + (S - window) // hop (no centre padding), so F is known from S alone.
"""

import numpy as np


def hz_to_mel(hz):
  return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
  return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(*, num_mels: int, fft_size: int, sample_rate: int,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
  """Triangular filters float32 [fft_size // 2 + 1, num_mels] on the HTK mel scale."""
  fmax = sample_rate / 2 if fmax is None else fmax
  if not 0 <= fmin < fmax <= sample_rate / 2:
    raise ValueError(f'need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, '
                     f'fmax={fmax}, sample_rate={sample_rate}.')
  bins = np.linspace(0, sample_rate / 2, fft_size // 2 + 1)
  edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), num_mels + 2))
  lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
  rising = (bins[:, None] - lower) / (centre - lower)
  falling = (upper - bins[:, None]) / (upper - centre)
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def num_frames(num_samples: int, *, sample_rate: int, window_ms: float = 25.0,
               hop_ms: float = 10.0) -> int:
  window = int(round(sample_rate * window_ms / 1000))
  hop = int(round(sample_rate * hop_ms / 1000))
  if num_samples < window:
    raise ValueError(f'audio of {num_samples} samples is shorter than one '
                     f'{window_ms} ms window ({window} samples).')
  return 1 + (num_samples - window) // hop


def log_mel_spectrogram(audio: np.ndarray, *, sample_rate: int, num_mels: int = 128,
                        window_ms: float = 25.0, hop_ms: float = 10.0,
                        fmin: float = 0.0, fmax: float | None = None,
                        eps: float = 1e-6) -> np.ndarray:
  """log(mel power + eps) float32 [F, num_mels] of mono audio [S]."""
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 1:
    raise ValueError(f'audio must be mono [S], got shape {audio.shape}.')
  window = int(round(sample_rate * window_ms / 1000))
  hop = int(round(sample_rate * hop_ms / 1000))
  frames = num_frames(len(audio), sample_rate=sample_rate, window_ms=window_ms,
                      hop_ms=hop_ms)
  fft_size = 1 << (window - 1).bit_length()
  starts = np.arange(frames) * hop
  segments = audio[starts[:, None] + np.arange(window)] * np.hanning(window).astype(
      np.float32)  # [F, window]
  power = np.abs(np.fft.rfft(segments, n=fft_size, axis=-1)) ** 2  # [F, fft/2 + 1]
  mel = power @ mel_filterbank(num_mels=num_mels, fft_size=fft_size,
                               sample_rate=sample_rate, fmin=fmin, fmax=fmax)
  return np.log(mel + eps).astype(np.float32)
