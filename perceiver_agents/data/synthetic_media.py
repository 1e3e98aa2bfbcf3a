"""Real-format media files with known content, for tests, demos and benchmarks.

  moving_shape_clip(...)     -> frames uint8 [T, H, W, 3], audio float32 [S]: one coloured
                                shape crossing a textured background, with a class tone
  write_kinetics_like(...)   -> a Kinetics-style folder (annotation CSV + MP4/MKV clips)
  write_audioset_like(...)   -> AudioSet-style segment CSV + class_labels_indices.csv + WAVs

Every file goes through the same encoders/decoders (PyAV) as real data.
"""

import csv
import os
from typing import Optional, Sequence

import numpy as np

from perceiver_agents.data import media

# Per class: shape (0 square, 1 disc, 2 horizontal bar), colour and tone frequency (Hz).
_SHAPES = ('square', 'disc', 'bar')
_COLOURS = np.array([[230, 60, 40], [40, 200, 80], [50, 90, 230], [230, 200, 40],
                     [200, 60, 200], [40, 200, 220]], np.float32)


def class_tone(label: int) -> float:
  return 220.0 * 2 ** (label * 5 / 12)  # Fourths above A3.


def moving_shape_clip(*, label: int, num_frames: int, size: int, fps: float,
                      sample_rate: int, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
  """A shape of class `label` moving at a random constant velocity, and its tone.

  Returns frames uint8 [num_frames, size, size, 3] and audio float32
  [round(num_frames / fps * sample_rate)] in [-1, 1] (the tone's loudness follows the
  shape's horizontal position).
  """
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  background = 40 + 30 * np.sin(2 * np.pi * (xx * rng.uniform(1, 3) + yy * rng.uniform(1, 3)))
  background = np.repeat(background[..., None], 3, axis=-1) * np.array([1.0, 0.9, 1.1])
  pos = rng.uniform(0.25, 0.75, size=2)
  vel = rng.uniform(-0.5, 0.5, size=2) / fps * 1.5
  radius = rng.uniform(0.12, 0.2)
  colour = _COLOURS[label % len(_COLOURS)]
  shape = _SHAPES[label % len(_SHAPES)]
  frames, xs = [], []
  for _ in range(num_frames):
    dy, dx = yy - pos[0], xx - pos[1]
    if shape == 'square':
      inside = (np.abs(dy) < radius) & (np.abs(dx) < radius)
    elif shape == 'disc':
      inside = dy ** 2 + dx ** 2 < radius ** 2
    else:
      inside = (np.abs(dy) < radius / 2.5) & (np.abs(dx) < radius * 1.5)
    frame = np.where(inside[..., None], colour, background)
    frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    xs.append(pos[1])
    pos = pos + vel
    for k in range(2):  # Bounce off the borders.
      if not 0.15 < pos[k] < 0.85:
        vel[k] = -vel[k]
        pos[k] = np.clip(pos[k], 0.15, 0.85)
  n = int(round(num_frames / fps * sample_rate))
  t = np.arange(n) / sample_rate
  loudness = np.interp(t * fps, np.arange(num_frames), np.asarray(xs))
  audio = (0.2 + 0.5 * loudness) * np.sin(2 * np.pi * class_tone(label) * t
                                          + rng.uniform(0, 2 * np.pi))
  return np.stack(frames), audio.astype(np.float32)


def write_kinetics_like(root: str, *, num_clips: int, classes: Sequence[str],
                        seconds: float = 1.0, fps: int = 25, size: int = 32,
                        sample_rate: int = 16000, seed: int = 0, extension: str = '.mp4',
                        csv_name: str = 'annotations.csv',
                        label_folders: bool = True) -> str:
  """Writes `num_clips` clips (cycling through `classes`) and their annotation CSV under
  `root`, in Kinetics' layout; returns the CSV path. Clip i of class c is
  root/videos/<c>/<youtube_id>_<start:06d>_<end:06d><extension>."""
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(num_clips):
    label = i % len(classes)
    youtube_id = f'syn{seed:03d}{i:06d}'[-11:]
    start = int(rng.integers(0, 300))
    end = start + int(np.ceil(seconds))
    frames, audio = moving_shape_clip(label=label, num_frames=int(round(seconds * fps)),
                                      size=size, fps=fps, sample_rate=sample_rate, rng=rng)
    folder = os.path.join(root, 'videos', classes[label] if label_folders else '')
    os.makedirs(folder, exist_ok=True)
    media.write_video(os.path.join(folder, f'{youtube_id}_{start:06d}_{end:06d}{extension}'),
                      frames, fps, audio=audio, sample_rate=sample_rate)
    rows.append((classes[label], youtube_id, start, end, 'train'))
  path = os.path.join(root, csv_name)
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['label', 'youtube_id', 'time_start', 'time_end', 'split'])
    writer.writerows(rows)
  return path


def write_audioset_like(root: str, *, num_segments: int, num_classes: int,
                        seconds: float = 1.0, sample_rate: int = 16000, seed: int = 0,
                        csv_name: str = 'segments.csv', video_fps: Optional[int] = None,
                        video_size: int = 32) -> tuple[str, str]:
  """AudioSet-style files under `root`: (segments CSV path, class_labels_indices.csv path).

  Segment i has 1-2 labels, each sounding as its class tone; audio is written as
  root/audio/<YTID>.wav and, with video_fps, also root/video/<YTID>.mp4 (moving shape of
  the first label).
  """
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, 'audio'), exist_ok=True)
  labels_path = os.path.join(root, 'class_labels_indices.csv')
  with open(labels_path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['index', 'mid', 'display_name'])
    for k in range(num_classes):
      writer.writerow([k, f'/m/syn{k:03d}', f'Tone {k}'])
  lines = ['# Segments csv created synthetically for tests',
           f'# num_ytids={num_segments}, num_segs={num_segments}, num_unique_labels='
           f'{num_classes}, num_positive_labels=0',
           '# YTID, start_seconds, end_seconds, positive_labels']
  for i in range(num_segments):
    ytid = f'syn{seed:02d}{i:06d}'[-11:]
    first = i % num_classes
    labels = [first]
    if num_classes > 1 and rng.uniform() < 0.5:
      labels.append(int((first + 1 + rng.integers(num_classes - 1)) % num_classes))
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    audio = sum(0.3 * np.sin(2 * np.pi * class_tone(k) * t + rng.uniform(0, 6))
                for k in labels)
    audio = audio + 0.01 * rng.standard_normal(n)
    media.write_wav(os.path.join(root, 'audio', f'{ytid}.wav'), audio, sample_rate)
    if video_fps:
      os.makedirs(os.path.join(root, 'video'), exist_ok=True)
      frames, _ = moving_shape_clip(label=first, num_frames=int(round(seconds * video_fps)),
                                    size=video_size, fps=video_fps, sample_rate=sample_rate,
                                    rng=rng)
      media.write_video(os.path.join(root, 'video', f'{ytid}.mp4'), frames, video_fps)
    start = float(rng.integers(0, 300))
    mids = ','.join(f'/m/syn{k:03d}' for k in labels)
    lines.append(f'{ytid}, {start:.3f}, {start + 10:.3f}, "{mids}"')
  segments_path = os.path.join(root, csv_name)
  with open(segments_path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return segments_path, labels_path
