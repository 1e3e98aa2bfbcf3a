"""AudioSet from the published segment CSVs plus local audio (and video) files.

Files as released by Google:
  balanced_train_segments.csv / eval_segments.csv / unbalanced_train_segments.csv:
      '#' comment lines, then `YTID, start_seconds, end_seconds, "mid1,mid2,..."`
  class_labels_indices.csv: `index,mid,display_name` (527 classes)
Local media: one file per segment anywhere below a folder, named `<YTID>.<ext>`,
`Y<YTID>.<ext>` or `<YTID>_<anything>.<ext>` (the names common downloaders use), holding
the 10 s segment, so its time 0 is start_seconds. Segments without a file are skipped
(and counted: AudioSet downloads always miss some).

Class-balanced sampling (`balanced_indices`): each batch slot draws a class uniformly among
the classes with examples, then one of that class's examples uniformly — rare classes are
seen as often as common ones.
"""

import csv
import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

AUDIO_EXTENSIONS = ('.wav', '.flac', '.mp3', '.m4a', '.ogg', '.opus', '.aac', '.mp4',
                    '.mkv', '.webm')
VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.webm', '.avi', '.mov')


@dataclasses.dataclass(frozen=True)
class Segment:
  ytid: str
  start_seconds: float
  end_seconds: float
  mids: tuple[str, ...]


def read_class_labels(path: str) -> tuple[list[str], list[str]]:
  """(mids, display names) in class-index order from class_labels_indices.csv."""
  if not os.path.isfile(path):
    raise ValueError(f'{path}: no such class labels file.')
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    missing = {'index', 'mid', 'display_name'} - set(reader.fieldnames or [])
    if missing:
      raise ValueError(f'{path}: lacks columns {sorted(missing)} '
                       f'(expected index,mid,display_name).')
    rows = sorted(((int(r['index']), r['mid'], r['display_name']) for r in reader))
  if [r[0] for r in rows] != list(range(len(rows))) or not rows:
    raise ValueError(f'{path}: indices must run 0..N-1.')
  return [r[1] for r in rows], [r[2] for r in rows]


def read_segments(path: str) -> list[Segment]:
  """The segments of an AudioSet segments CSV, in file order."""
  if not os.path.isfile(path):
    raise ValueError(f'{path}: no such segments file.')
  segments = []
  with open(path, newline='') as f:
    for line_no, row in enumerate(csv.reader(f, skipinitialspace=True), start=1):
      if not row or row[0].startswith('#'):
        continue
      if len(row) != 4:
        raise ValueError(f'{path}:{line_no}: expected 4 fields (YTID, start_seconds, '
                         f'end_seconds, positive_labels), got {len(row)}: {row}.')
      try:
        start, end = float(row[1]), float(row[2])
      except ValueError:
        raise ValueError(f'{path}:{line_no}: bad start/end seconds {row[1:3]}.') from None
      mids = tuple(m.strip() for m in row[3].split(',') if m.strip())
      segments.append(Segment(row[0].strip(), start, end, mids))
  if not segments:
    raise ValueError(f'{path}: no segments.')
  return segments


def index_files(root: str, extensions: Sequence[str]) -> dict[str, str]:
  """{YTID: path} of the media files below `root` (see the module docstring's names)."""
  if not os.path.isdir(root):
    raise ValueError(f'{root}: no such media folder.')
  found = {}
  for folder, _, files in os.walk(root):
    for name in sorted(files):
      stem, ext = os.path.splitext(name)
      if ext.lower() not in extensions:
        continue
      found.setdefault(stem, os.path.join(folder, name))
      if stem.startswith('Y') and len(stem) == 12:
        found.setdefault(stem[1:], os.path.join(folder, name))
      if '_' in stem[11:12]:
        found.setdefault(stem[:11], os.path.join(folder, name))
  return found


def multi_hot(mids: Sequence[str], class_index: dict, *, where: str) -> np.ndarray:
  out = np.zeros(len(class_index), np.float32)
  for mid in mids:
    if mid not in class_index:
      raise ValueError(f'{where}: label {mid!r} is not in the class labels file.')
    out[class_index[mid]] = 1.0
  return out


class AudioSetSource:
  """Segments of one split that have local files: multi-hot labels and file paths.

  Attributes:
    segments: the kept Segments; audio_paths / video_paths (None without video_root).
    labels: float32 [N, K] multi-hot.
    num_missing: segments of the CSV without a local file.
  """

  def __init__(self, *, segments_csv: str, class_labels_csv: str, audio_root: str,
               video_root: Optional[str] = None, max_segments: int = 0):
    mids, self.class_names = read_class_labels(class_labels_csv)
    class_index = {m: i for i, m in enumerate(mids)}
    segments = read_segments(segments_csv)
    audio_files = index_files(audio_root, AUDIO_EXTENSIONS)
    video_files = index_files(video_root, VIDEO_EXTENSIONS) if video_root else None
    self.segments, self.audio_paths, self.video_paths, labels = [], [], [], []
    for segment in segments:
      audio = audio_files.get(segment.ytid)
      video = video_files.get(segment.ytid) if video_files is not None else None
      if audio is None or (video_files is not None and video is None):
        continue
      labels.append(multi_hot(segment.mids, class_index,
                              where=f'{segments_csv} ({segment.ytid})'))
      self.segments.append(segment)
      self.audio_paths.append(audio)
      self.video_paths.append(video)
      if max_segments and len(self.segments) >= max_segments:
        break
    if not self.segments:
      where = audio_root + (f' / {video_root}' if video_root else '')
      raise ValueError(f'{where}: no media file for any of the {len(segments)} segments '
                       f'of {segments_csv} (expected names like {segments[0].ytid}.wav).')
    self.num_missing = len(segments) - len(self.segments) if not max_segments else 0
    self.labels = np.stack(labels)

  def __len__(self) -> int:
    return len(self.segments)

  @property
  def num_classes(self) -> int:
    return self.labels.shape[1]


def balanced_indices(labels: np.ndarray, *, seed: int, step: int,
                     batch_size: int) -> np.ndarray:
  """Class-balanced example indices int64 [batch_size] of batch `step` (labels [N, K]).

  A pure function of (seed, step): draws a class uniformly among those with at least one
  example, then one of its examples uniformly.
  """
  labels = np.asarray(labels)
  present = np.flatnonzero(labels.sum(0) > 0)
  if present.size == 0:
    raise ValueError('labels: no class has a positive example.')
  rng = np.random.default_rng([seed, step, 2])
  classes = rng.choice(present, size=batch_size)
  out = np.empty(batch_size, np.int64)
  for j, k in enumerate(classes):
    members = np.flatnonzero(labels[:, k] > 0)
    out[j] = members[rng.integers(len(members))]
  return out
