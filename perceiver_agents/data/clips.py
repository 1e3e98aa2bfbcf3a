"""Audio-visual clips as fixed-length model windows: frames + audio of the same time span.

    frames, audio = decode(path, fps=25, size=32, sample_rate=16000, ...)
    example = window(frames, audio, first_frame=0, num_frames=8,
                     audio_samples_per_frame=640, pad_short=False, name=path)
    # {'image': float32 [T, S, S, 3] in [0, 1], 'audio': float32 [T * A, 1] in [-1, 1]}

A window of T frames holds T * A audio samples (A = sample_rate / fps), starting at
sample first_frame * A. A clip shorter than the window is an error naming the clip, or,
with pad_short, padded: the last frame repeats and the audio continues as silence.
"""

from typing import Optional

import numpy as np

from perceiver_agents.data import media


def decode(path: str, *, fps: float, size: int, sample_rate: int,
           audio_samples_per_frame: int, resample_audio: bool = True,
           silent_if_no_audio: bool = False, start: float = 0.0,
           max_frames: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
  """Frames uint8 [T, S, S, 3] at `fps` (shorter side resized to `size`, centre crop) and
  audio float32 [S_a] at `sample_rate`, both from `start` seconds (at most max_frames).

  A file without an audio stream is an error, or, with silent_if_no_audio, silence of
  T * audio_samples_per_frame samples.
  """
  frames = media.read_video(path, fps=fps, size=size, start=start, max_frames=max_frames)
  try:
    audio = media.read_audio(path, sample_rate=sample_rate, start=start,
                             resample=resample_audio)
  except ValueError as e:
    if not (silent_if_no_audio and 'no audio stream' in str(e)):
      raise
    audio = np.zeros(len(frames) * audio_samples_per_frame, np.float32)
  return frames, audio


def num_windows(num_clip_frames: int, num_frames: int) -> int:
  """How many distinct window starts (in frames) a clip of num_clip_frames offers (>= 1)."""
  return max(1, num_clip_frames - num_frames + 1)


def window(frames: np.ndarray, audio: np.ndarray, *, first_frame: int, num_frames: int,
           audio_samples_per_frame: int, pad_short: bool, name: str) -> dict:
  """The window of num_frames frames from first_frame of a decoded clip.

  Args:
    frames: uint8 [T_clip, S, S, 3].
    audio: float [S_a], audio_samples_per_frame samples per frame.
    name: the clip, for the error of a clip shorter than the window.

  Returns:
    {'image': float32 [T, S, S, 3] in [0, 1], 'audio': float32 [T * A, 1]}.
  """
  pad = 'edge' if pad_short else 'error'
  frames = media.fit_length(frames[first_frame:], num_frames, pad=pad, name=name)
  start = first_frame * audio_samples_per_frame
  audio = media.fit_length(audio[start:], num_frames * audio_samples_per_frame,
                           pad='zeros' if pad_short else 'error', name=f'{name}, audio')
  return {'image': frames.astype(np.float32) / 255.0,
          'audio': audio[:, None].astype(np.float32)}
