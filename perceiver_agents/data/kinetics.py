"""Kinetics-style video folders with the published CSV annotations.

Annotations: the CSV files released with Kinetics-400/600/700(-2020), one clip per row with
the header columns `youtube_id, time_start, time_end` and, outside the test split,
`label` (other columns such as `split` or `is_cc` are ignored). Videos: files named as the
common downloaders name them, `<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>`, or just
`<youtube_id>.<ext>`, anywhere below the root folder (flat, or in one folder per label).
Each file holds the trimmed clip, so its time 0 is `time_start` of the annotation.

Class indices are the sorted label names of the annotation file (Kinetics' convention),
or of an explicit `classes` list. Windows of a clip: data/clips.py.

    source = KineticsSource(annotations=..., video_root=..., num_frames=8, fps=25, ...)
    batch = train_batch(source, seed=0, step=step, batch_size=8)
    for batch in eval_batches(source, batch_size=8): ...
"""

import csv
import dataclasses
import functools
import os
from typing import Iterator, Optional, Sequence

import numpy as np

from perceiver_agents.data import clips, sampling

VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.webm', '.avi', '.mov', '.m4v')
REQUIRED_COLUMNS = ('youtube_id', 'time_start', 'time_end')


@dataclasses.dataclass(frozen=True)
class Clip:
  youtube_id: str
  time_start: int
  time_end: int
  label: Optional[str]

  @property
  def file_stem(self) -> str:
    return f'{self.youtube_id}_{self.time_start:06d}_{self.time_end:06d}'


def read_annotations(path: str) -> list[Clip]:
  """The clips of a Kinetics annotation CSV, in file order."""
  if not os.path.isfile(path):
    raise ValueError(f'{path}: no such annotation file.')
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
      raise ValueError(f'{path}: annotation CSV lacks columns {missing}; has {columns}.')
    clips = []
    for line, row in enumerate(reader, start=2):
      row = {k.strip(): (v or '').strip() for k, v in row.items() if k}
      try:
        clips.append(Clip(youtube_id=row['youtube_id'],
                          time_start=int(float(row['time_start'])),
                          time_end=int(float(row['time_end'])),
                          label=row.get('label') or None))
      except ValueError:
        raise ValueError(f'{path}:{line}: bad time_start/time_end in {row}.') from None
  if not clips:
    raise ValueError(f'{path}: annotation CSV has no clips.')
  return clips


def index_videos(root: str) -> dict[str, str]:
  """{file stem: path} of every video file below `root`."""
  if not os.path.isdir(root):
    raise ValueError(f'{root}: no such video folder.')
  found = {}
  for folder, _, files in os.walk(root):
    for name in sorted(files):
      stem, ext = os.path.splitext(name)
      if ext.lower() in VIDEO_EXTENSIONS:
        found.setdefault(stem, os.path.join(folder, name))
  return found


class KineticsSource:
  """The annotated clips of one split that have a video file, as model-ready windows.

  Args:
    annotations: path of the split's CSV.
    video_root: folder holding the video files.
    classes: label names in class-index order; None: sorted labels of `annotations`.
    num_frames, fps, image_size: the model's video window: num_frames frames at `fps`,
      size x size pixels (shorter side resized, centre crop).
    sample_rate, audio_samples_per_frame: the model's audio; sample_rate / fps must equal
      audio_samples_per_frame (so audio and frames cover the same time).
    pad_short: clips shorter than the window are an error (False) or padded (True: the last
      frame repeats, audio continues as silence).
    silent_if_no_audio: a clip without an audio stream is an error (False) or silent.
    resample_audio: resample audio to sample_rate (True) or require it (False).
  """

  def __init__(self, *, annotations: str, video_root: str,
               classes: Optional[Sequence[str]] = None, num_frames: int, fps: float,
               image_size: int, sample_rate: int, audio_samples_per_frame: int,
               pad_short: bool = False, silent_if_no_audio: bool = False,
               resample_audio: bool = True, cache_size: int = 256):
    if abs(sample_rate / fps - audio_samples_per_frame) > 1e-6:
      raise ValueError(f'sample_rate / fps ({sample_rate} / {fps}) must equal '
                       f'audio_samples_per_frame ({audio_samples_per_frame}).')
    clips = read_annotations(annotations)
    if classes is None:
      labels = {c.label for c in clips}
      if None in labels:
        raise ValueError(f'{annotations}: some clips have no label; pass the class list.')
      classes = sorted(labels)
    self.classes = list(classes)
    class_index = {name: i for i, name in enumerate(self.classes)}
    files = index_videos(video_root)
    self.clips, self.paths, self.labels = [], [], []
    for clip in clips:
      path = files.get(clip.file_stem) or files.get(clip.youtube_id)
      if path is None:
        continue
      if clip.label is not None and clip.label not in class_index:
        raise ValueError(f'{annotations}: label {clip.label!r} of {clip.youtube_id} is not '
                         f'one of the {len(self.classes)} classes.')
      self.clips.append(clip)
      self.paths.append(path)
      self.labels.append(class_index.get(clip.label, -1))
    if not self.clips:
      raise ValueError(f'{video_root}: none of the {len(clips)} clips of {annotations} has '
                       f'a video file (expected names like {clips[0].file_stem}.mp4).')
    self.labels = np.asarray(self.labels, np.int32)
    self.num_missing = len(clips) - len(self.clips)
    self.num_frames, self.fps, self.image_size = num_frames, fps, image_size
    self.sample_rate, self.audio_samples_per_frame = sample_rate, audio_samples_per_frame
    self.pad_short, self.silent_if_no_audio = pad_short, silent_if_no_audio
    self.resample_audio = resample_audio
    self._decode = functools.lru_cache(maxsize=cache_size)(self._decode_uncached)

  def __len__(self) -> int:
    return len(self.clips)

  def _decode_uncached(self, i: int):
    """The whole clip i: frames uint8 [T, S, S, 3] at fps, audio float32 [S_a]."""
    return clips.decode(self.paths[i], fps=self.fps, size=self.image_size,
                        sample_rate=self.sample_rate,
                        audio_samples_per_frame=self.audio_samples_per_frame,
                        resample_audio=self.resample_audio,
                        silent_if_no_audio=self.silent_if_no_audio)

  def num_windows(self, i: int) -> int:
    """How many distinct window starts (in frames) clip i offers (>= 1)."""
    frames, _ = self._decode(i)
    return clips.num_windows(len(frames), self.num_frames)

  def window(self, i: int, first_frame: int = 0) -> dict:
    """Clip i from frame `first_frame`: {'image': float32 [T, S, S, 3] in [0, 1],
    'audio': float32 [T * audio_samples_per_frame, 1], 'label': int32 []}."""
    frames, audio = self._decode(i)
    example = clips.window(frames, audio, first_frame=first_frame,
                           num_frames=self.num_frames,
                           audio_samples_per_frame=self.audio_samples_per_frame,
                           pad_short=self.pad_short,
                           name=f'{self.paths[i]} (from frame {first_frame})')
    return dict(example, label=np.int32(self.labels[i]))

  def batch(self, indices: Sequence[int], first_frames: Sequence[int]) -> dict:
    """Clips `indices` from `first_frames`: {'image' [B, T, S, S, 3], 'audio' [B, T * A, 1],
    'label' int32 [B]}."""
    examples = [self.window(int(i), int(f)) for i, f in zip(indices, first_frames)]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def train_batch(source: KineticsSource, *, seed: int, step: int, batch_size: int,
                random_start: bool = True) -> dict:
  """Training batch `step` of `source` (see KineticsSource.batch), a pure function of
  (seed, step): clips drawn epoch by epoch (data/sampling.py), each window starting at a
  random frame of its clip (random_start) or at its first frame."""
  idx = sampling.batch_indices(seed=seed, step=step, batch_size=batch_size,
                               num_examples=len(source))
  if random_start:
    rng = sampling.step_rng(seed, step)
    starts = [int(rng.integers(source.num_windows(int(i)))) for i in idx]
  else:
    starts = [0] * len(idx)
  return source.batch(idx, starts)


def eval_batches(source: KineticsSource, *, batch_size: int,
                 max_clips: int = 0) -> Iterator[dict]:
  """The first window of every clip (of the first max_clips; 0: all), in file order, in
  batches of at most batch_size."""
  num = len(source) if not max_clips else min(max_clips, len(source))
  for first in range(0, num, batch_size):
    idx = range(first, min(first + batch_size, num))
    yield source.batch(idx, [0] * len(idx))
