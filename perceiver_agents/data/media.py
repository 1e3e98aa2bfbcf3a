"""Video and audio files in and out, through PyAV (FFmpeg), resampled to a model's rates.

Reading:
  read_video(path, fps=..., size=...)         -> uint8 [T, size, size, 3], frames at `fps`
  read_audio(path, sample_rate=...)           -> float32 [S] mono in [-1, 1] at sample_rate
  fit_length(x, length, pad=..., name=...)    -> x cut or padded to `length` along axis 0
Writing (predictions, tests, demos):
  write_video(path, frames, fps, audio=None, sample_rate=None)   MP4 (mpeg4 + AAC) or MKV
  write_wav(path, audio, sample_rate)                            16-bit PCM (stdlib `wave`)

Resampling: video frames are re-timed by nearest-earlier frame (frame i of the output shows
the source frame on screen at time start + i / fps, FFmpeg's `fps` filter semantics); audio
goes through FFmpeg's resampler (swresample) to mono float at the requested rate. Every
error about a file is one ValueError naming that file: missing, unreadable, no stream of
the kind asked for, or nothing decoded (zero length).
"""

import fractions
import os
import wave
from typing import Optional

import numpy as np


def _av():
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # pragma: no cover - av is in the `media` extra.
    raise ImportError("media files need PyAV: pip install 'perceiver-agents[media]'") from e
  return av


def _open(path: str):
  av = _av()
  if not os.path.isfile(path):
    raise ValueError(f'{path}: no such file.')
  if os.path.getsize(path) == 0:
    raise ValueError(f'{path}: file is empty (zero length).')
  try:
    return av.open(path)
  except av.FFmpegError as e:
    raise ValueError(f'{path}: unreadable media file ({e}).') from None


def probe(path: str) -> dict:
  """Stream facts: {'duration': s or None, 'fps': float or None, 'sample_rate': int or None,
  'has_video': bool, 'has_audio': bool}."""
  with _open(path) as container:
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    duration = (container.duration / 1e6) if container.duration else None
    return {'duration': duration,
            'fps': float(video.average_rate) if video is not None and video.average_rate
                   else None,
            'sample_rate': audio.rate if audio is not None else None,
            'has_video': video is not None, 'has_audio': audio is not None}


def _resize_center_crop(image, size: int):
  """PIL image -> uint8 [size, size, 3]: shorter side to `size`, then a centre crop."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  w, h = image.size
  scale = size / min(w, h)
  new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
  image = image.resize((new_w, new_h), Image.BILINEAR)
  left, top = (new_w - size) // 2, (new_h - size) // 2
  return np.asarray(image.crop((left, top, left + size, top + size)), np.uint8)


def read_video(path: str, *, fps: float, size: Optional[int] = None, start: float = 0.0,
               duration: Optional[float] = None,
               max_frames: Optional[int] = None) -> np.ndarray:
  """Decodes the frames of `path` shown at times start + i / fps, i = 0, 1, ...

  Args:
    path: any container FFmpeg reads (mp4, mkv, webm, avi, ...).
    fps: output frame rate; the source's own rate may differ (frames are re-timed).
    size: resize the shorter side to `size` and centre-crop to size x size; None keeps
      the source resolution.
    start, duration: the time window in seconds (duration None: to the end).
    max_frames: stop after this many output frames.

  Returns:
    uint8 [T, H, W, 3] (H = W = size if given).

  Raises:
    ValueError: naming `path`, if it is missing, unreadable, has no video stream, or no
      frame lies in the window.
  """
  if fps <= 0:
    raise ValueError(f'fps must be > 0, got {fps}.')
  if size is not None and size < 1:
    raise ValueError(f'size must be >= 1, got {size}.')
  end = None if duration is None else start + duration
  out, previous, previous_time = [], None, None
  next_time = start

  def emit(image):
    out.append(_resize_center_crop(image, size) if size else
               np.asarray(image.convert('RGB'), np.uint8))

  def done():
    return (max_frames is not None and len(out) >= max_frames) or (
        end is not None and next_time >= end - 1e-9)

  av = _av()
  with _open(path) as container:
    if not container.streams.video:
      raise ValueError(f'{path}: has no video stream.')
    stream = container.streams.video[0]
    stream.thread_type = 'AUTO'
    try:
      for frame in container.decode(stream):
        if frame.time is None:
          continue
        t = float(frame.time)
        # Every output time in [previous_time, t) shows the previous frame.
        while previous is not None and next_time < t and not done():
          emit(previous)
          next_time = start + len(out) / fps
        if done():
          break
        previous, previous_time = frame.to_image(), t
      else:
        # After the last frame: it stays on screen for one source frame duration.
        if previous is not None:
          rate = float(stream.average_rate or fps)
          last_end = previous_time + 1.0 / rate
          while next_time < last_end - 1e-9 and not done():
            emit(previous)
            next_time = start + len(out) / fps
    except av.FFmpegError as e:
      raise ValueError(f'{path}: video decoding failed ({e}).') from None
  if not out:
    raise ValueError(f'{path}: no video frames in the window starting at {start} s '
                     f'(zero-length or too short).')
  return np.stack(out)


def read_audio(path: str, *, sample_rate: int, start: float = 0.0,
               duration: Optional[float] = None,
               resample: bool = True) -> np.ndarray:
  """Decodes the first audio stream of `path` as mono float32 [S] at `sample_rate`.

  Channels are averaged. With resample=False a file whose rate differs from
  `sample_rate` is an error instead of being resampled.

  Raises:
    ValueError: naming `path`: missing, unreadable, no audio stream, a differing sample
      rate with resample=False, or no samples in the window.
  """
  if sample_rate < 1:
    raise ValueError(f'sample_rate must be >= 1, got {sample_rate}.')
  av = _av()
  chunks = []
  with _open(path) as container:
    if not container.streams.audio:
      raise ValueError(f'{path}: has no audio stream.')
    stream = container.streams.audio[0]
    if not resample and stream.rate != sample_rate:
      raise ValueError(f'{path}: audio is sampled at {stream.rate} Hz, the model expects '
                       f'{sample_rate} Hz (set resampling on to convert).')
    resampler = av.AudioResampler(format='flt', layout='mono', rate=sample_rate)
    try:
      for frame in container.decode(stream):
        for out in resampler.resample(frame):
          chunks.append(out.to_ndarray().reshape(-1))
      for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as e:
      raise ValueError(f'{path}: audio decoding failed ({e}).') from None
  audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
  first = int(round(start * sample_rate))
  last = None if duration is None else first + int(round(duration * sample_rate))
  audio = audio[first:last]
  if audio.size == 0:
    raise ValueError(f'{path}: no audio samples in the window starting at {start} s '
                     f'(zero-length or too short).')
  return audio


def fit_length(x: np.ndarray, length: int, *, pad: str = 'error', name: str = 'clip',
               ) -> np.ndarray:
  """Cuts `x` [N, ...] to its first `length` entries, or pads a short one.

  pad: 'error' raises for N < length; 'zeros' appends zeros; 'edge' repeats the last
  entry (for frames: the last frame stays on screen).
  """
  if pad not in ('error', 'zeros', 'edge'):
    raise ValueError(f"pad must be 'error', 'zeros' or 'edge', got {pad!r}.")
  n = len(x)
  if n >= length:
    return x[:length]
  if pad == 'error' or n == 0:
    raise ValueError(f'{name}: has {n} entries, shorter than the model window of '
                     f'{length}; pass --config.data.pad_short=true to pad short '
                     f'inputs instead.')
  widths = [(0, length - n)] + [(0, 0)] * (x.ndim - 1)
  return np.pad(x, widths, mode='constant' if pad == 'zeros' else 'edge')


def write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
  """Writes float audio [S] or [S, C] in [-1, 1] as 16-bit PCM WAV (values are clipped)."""
  audio = np.asarray(audio, np.float32)
  if audio.ndim == 1:
    audio = audio[:, None]
  if audio.ndim != 2:
    raise ValueError(f'audio must be [S] or [S, C], got shape {audio.shape}.')
  pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype('<i2')
  with wave.open(path, 'wb') as f:
    f.setnchannels(audio.shape[1])
    f.setsampwidth(2)
    f.setframerate(int(sample_rate))
    f.writeframes(pcm.tobytes())


def write_video(path: str, frames: np.ndarray, fps: int, *,
                audio: Optional[np.ndarray] = None,
                sample_rate: Optional[int] = None, codec: str = 'mpeg4',
                quality: int = 2) -> None:
  """Writes uint8 frames [T, H, W, 3] (H, W even) and optional mono audio [S] to `path`.

  The container follows the extension (.mp4, .mkv, ...); audio is AAC in .mp4 and 16-bit
  PCM elsewhere. `quality` is mpeg4's fixed quantiser (1 best .. 31).
  """
  av = _av()
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f'frames must be uint8 [T, H, W, 3], got {frames.dtype} '
                     f'{frames.shape}.')
  if frames.shape[1] % 2 or frames.shape[2] % 2:
    raise ValueError(f'frames must have even height and width, got {frames.shape[1:3]}.')
  if audio is not None and not sample_rate:
    raise ValueError('sample_rate is required with audio.')
  with av.open(path, 'w') as container:
    v = container.add_stream(codec, rate=int(fps))
    v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], 'yuv420p'
    if codec == 'mpeg4':
      v.codec_context.qmin = v.codec_context.qmax = quality
    a = None
    if audio is not None:
      audio_codec = 'aac' if path.lower().endswith(('.mp4', '.m4v', '.mov')) else 'pcm_s16le'
      a = container.add_stream(audio_codec, rate=int(sample_rate))
      a.layout = 'mono'
    for image in frames:
      for packet in v.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
        container.mux(packet)
    for packet in v.encode():
      container.mux(packet)
    if a is not None:
      samples = np.asarray(audio, np.float32).reshape(1, -1)
      step = 1024
      for i in range(0, samples.shape[1], step):
        chunk = np.ascontiguousarray(samples[:, i:i + step])
        frame = av.AudioFrame.from_ndarray(chunk, format='flt', layout='mono')
        frame.sample_rate = int(sample_rate)
        frame.pts = i
        frame.time_base = fractions.Fraction(1, int(sample_rate))
        for packet in a.encode(frame):
          container.mux(packet)
      for packet in a.encode():
        container.mux(packet)
