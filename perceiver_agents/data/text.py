"""Text for the byte-level language tasks: corpora, packing into windows, MLM masking.

Everything here is host-side numpy over the ids of `encoders.text.BytesTokenizer`
(PAD=0, BOS=1, EOS=2, MASK=3, CLS=4, SEP=5, byte b -> b + 6).

Corpora:
  * local text files (`read_text_files`): UTF-8 only; a file that is not valid UTF-8 raises
    a ValueError naming the file and the byte offset. Documents are lines, blank-line
    separated paragraphs, or whole files.
  * TFDS `c4` and `wikipedia` (`tfds_documents`), streamed in the builder's fixed order;
    their text features are taken as the raw UTF-8 bytes TFDS stores.

Packing (`pack_documents`): documents are joined, each followed by EOS, and cut into
windows of T ids; the last partial window is right-padded with PAD.

Masking (`mask_whole_words`): the BERT recipe on bytes with whole-word masking. A word is a
maximal run of non-whitespace bytes; words are drawn in random order until MASK_RATE (15%)
of the real (non-PAD) bytes of a window are selected (a word that would overshoot the
budget is skipped). Each selected byte becomes MASK with probability 0.8, a random byte
with 0.1, and stays itself with 0.1. PAD, the special ids and whitespace are never
selected. The loss is taken only at selected positions (`weights`).

Shape letters: B batch, T window length (ids), W words.
"""

from __future__ import annotations

import glob as glob_lib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Optional

import numpy as np

from perceiver_agents.data import tfds_util
from perceiver_agents.encoders.text import BytesTokenizer

TOKENIZER = BytesTokenizer()
MASK_RATE = 0.15          # Fraction of real bytes selected for prediction (BERT, Perceiver IO).
MASK_TOKEN_FRACTION = 0.8  # Of the selected bytes: replaced by MASK ...
RANDOM_TOKEN_FRACTION = 0.1  # ... by a random byte; the rest (0.1) keep their value.
_WHITESPACE = np.array([ord(c) for c in ' \t\n\r\x0b\x0c'], np.int32) + \
    TOKENIZER.num_reserved_tokens

# TFDS sources of the published pre-training mixture: (builder, train split, eval split).
TFDS_SOURCES = {
    'c4': ('c4/en', 'train', 'validation'),
    'wikipedia': ('wikipedia/20230601.en', 'train[:99%]', 'train[99%:]'),
}
DOCUMENT_UNITS = ('line', 'paragraph', 'file')


# -------------------------------------------------------------------------------------
# Corpora
# -------------------------------------------------------------------------------------


def decode_utf8(data: bytes, *, source: str) -> str:
  """`data` as text; raises ValueError naming `source` and the offset of a bad byte."""
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    raise ValueError(f'{source}: not valid UTF-8 at byte offset {e.start} '
                     f'({data[e.start:e.start + 4]!r}); the byte-level models read '
                     'UTF-8 text only (convert the file, e.g. with iconv).') from None


def split_into_documents(text: str, unit: str) -> list[str]:
  """Splits `text` into non-empty documents: 'line', 'paragraph' (blank-line separated)
  or 'file' (the whole text). Surrounding whitespace is stripped."""
  if unit not in DOCUMENT_UNITS:
    raise ValueError(f'data.document_unit: expected one of {DOCUMENT_UNITS}, got {unit!r}.')
  if unit == 'line':
    parts = text.splitlines()
  elif unit == 'paragraph':
    parts, current = [], []
    for line in text.splitlines():
      if line.strip():
        current.append(line)
      elif current:
        parts.append('\n'.join(current))
        current = []
    if current:
      parts.append('\n'.join(current))
  else:
    parts = [text]
  return [p.strip() for p in parts if p.strip()]


def read_text_files(pattern: str, *, unit: str = 'line') -> list[str]:
  """Documents of all files matching the glob `pattern` (sorted by path, `**` recursive).

  Raises:
    ValueError: no file matches; a file is not valid UTF-8 (naming file and offset);
      the files hold no text.
  """
  if not pattern:
    raise ValueError('data.files: empty; give a glob of UTF-8 text files, e.g. '
                     "--config.data.files='corpus/*.txt'.")
  paths = sorted(p for p in glob_lib.glob(os.path.expanduser(pattern), recursive=True)
                 if os.path.isfile(p))
  if not paths:
    raise ValueError(f'data.files: no file matches {pattern!r}.')
  documents = []
  for path in paths:
    with open(path, 'rb') as f:
      documents.extend(split_into_documents(decode_utf8(f.read(), source=path), unit))
  if not documents:
    raise ValueError(f'data.files: the {len(paths)} file(s) matching {pattern!r} hold no '
                     'text.')
  return documents


def split_by_document(documents: Sequence[str], *, eval_fraction: float,
                      seed: int = 0) -> tuple[list[str], list[str]]:
  """(train, eval) documents: a seeded random eval_fraction of whole documents is held out
  (at least one, and at least one stays for training)."""
  if not 0.0 < eval_fraction < 1.0:
    raise ValueError(f'data.eval_fraction: expected a value in (0, 1), got {eval_fraction}.')
  n = len(documents)
  if n < 2:
    raise ValueError(f'data: need at least 2 documents to hold some out, got {n}.')
  num_eval = min(max(1, int(round(eval_fraction * n))), n - 1)
  order = np.random.default_rng(seed).permutation(n)
  held_out = set(order[:num_eval].tolist())
  train = [d for i, d in enumerate(documents) if i not in held_out]
  evaluation = [d for i, d in enumerate(documents) if i in held_out]
  return train, evaluation


def tfds_documents(name: str, split: str, *, field: str = 'text', data_dir: str = '',
                   flag: str = 'data.data_dir') -> Iterator[bytes]:
  """Streams the `field` of TFDS dataset `name`/`split` in the builder's fixed order, as
  raw UTF-8 bytes (files are not shuffled, so the stream is the same on every run).
  The dataset must be prepared in `data_dir` ('' = TFDS's default; `flag` names it)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  dataset = tfds_util.load(name, split=split, data_dir=data_dir, flag=flag,
                           shuffle_files=False)
  for example in tfds.as_numpy(dataset):
    if field not in example:
      raise ValueError(f'{name}: examples have no {field!r} feature (features: '
                       f'{sorted(example)}).')
    yield bytes(example[field])


def interleave(streams: Sequence[Callable[[], Iterator]]) -> Iterator:
  """Round-robin over fresh iterators of `streams` until all are exhausted."""
  iterators = [make() for make in streams]
  while iterators:
    alive = []
    for it in iterators:
      try:
        yield next(it)
        alive.append(it)
      except StopIteration:
        pass
    iterators = alive


# -------------------------------------------------------------------------------------
# Packing
# -------------------------------------------------------------------------------------


def encode(text: str | bytes) -> np.ndarray:
  """Ids int32 [T] of `text` (str is UTF-8 encoded; bytes are taken as UTF-8 already)."""
  return TOKENIZER.to_int(text)


def pack_documents(documents: Iterable[str | bytes], window: int) -> Iterator[np.ndarray]:
  """Windows int32 [T=window] of the documents' ids, each document followed by EOS; the
  last window is padded with PAD. Yields nothing for no (or only empty) documents."""
  if window < 2:
    raise ValueError(f'window: expected at least 2 ids, got {window}.')
  buffer = np.zeros([0], np.int32)
  eos = np.array([TOKENIZER.eos_token], np.int32)
  for document in documents:
    ids = encode(document)
    if not ids.size:
      continue
    buffer = np.concatenate([buffer, ids, eos])
    while buffer.size >= window:
      yield buffer[:window]
      buffer = buffer[window:]
  if buffer.size:
    yield np.pad(buffer, (0, window - buffer.size), constant_values=TOKENIZER.pad_token)


def pack_all(documents: Iterable[str | bytes], window: int) -> np.ndarray:
  """All windows of `pack_documents` as int32 [N, T]."""
  windows = list(pack_documents(documents, window))
  if not windows:
    raise ValueError('data: the corpus holds no text to pack.')
  return np.stack(windows)


class WindowStream:
  """Batches of packed windows from a document stream, as a function of the step.

  `batch(step)` returns windows [step * B, (step + 1) * B) of the endless stream made by
  repeating `make_documents()` (a fresh, deterministic iterator each pass). Consecutive
  steps read on; any other step restarts the stream and skips to it, so a resumed run sees
  exactly the windows an uninterrupted run would.
  """

  def __init__(self, make_documents: Callable[[], Iterator], *, window: int,
               batch_size: int):
    self._make_documents = make_documents
    self._window = window
    self._batch_size = batch_size
    self._iterator: Optional[Iterator[np.ndarray]] = None
    self._next_step: Optional[int] = None

  def _windows(self) -> Iterator[np.ndarray]:
    while True:
      empty = True
      for w in pack_documents(self._make_documents(), self._window):
        empty = False
        yield w
      if empty:
        raise ValueError('data: the document stream is empty.')

  def batch(self, step: int) -> np.ndarray:
    """Windows int32 [B, T] of `step`."""
    if self._iterator is None or step != self._next_step:
      self._iterator = self._windows()
      for _ in range(step * self._batch_size):
        next(self._iterator)
    out = np.stack([next(self._iterator) for _ in range(self._batch_size)])
    self._next_step = step + 1
    return out


# -------------------------------------------------------------------------------------
# Masking
# -------------------------------------------------------------------------------------


def word_spans(ids: np.ndarray) -> np.ndarray:
  """[start, end) of each word of ids int [T], int64 [W, 2]: maximal runs of byte ids that
  are not whitespace (special ids, PAD included, and whitespace separate words)."""
  is_word = (ids >= TOKENIZER.num_reserved_tokens) & ~np.isin(ids, _WHITESPACE)  # [T]
  edges = np.diff(np.concatenate([[0], is_word.astype(np.int8), [0]]))
  return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)


def mask_whole_words(ids: np.ndarray, rng: np.random.Generator, *,
                     mask_rate: float = MASK_RATE,
                     mask_token_fraction: float = MASK_TOKEN_FRACTION,
                     random_token_fraction: float = RANDOM_TOKEN_FRACTION) -> dict:
  """Whole-word masking of one window ids int [T] (see the module docstring).

  Returns:
    inputs: int32 [T], the corrupted ids.
    input_mask: bool [T], True at non-PAD positions.
    targets: int32 [T], the original ids.
    weights: float32 [T], 1 at the selected positions (the loss positions), else 0.
  """
  ids = np.asarray(ids, np.int32)
  if ids.ndim != 1:
    raise ValueError(f'ids: expected rank 1 [T], got shape {ids.shape}.')
  if not 0.0 <= mask_rate <= 1.0:
    raise ValueError(f'mask_rate: expected a value in [0, 1], got {mask_rate}.')
  if mask_token_fraction < 0 or random_token_fraction < 0 or \
      mask_token_fraction + random_token_fraction > 1.0:
    raise ValueError('mask_token_fraction + random_token_fraction must lie in [0, 1], got '
                     f'{mask_token_fraction} + {random_token_fraction}.')
  input_mask = ids != TOKENIZER.pad_token
  budget = int(round(mask_rate * int(input_mask.sum())))
  selected = np.zeros(ids.shape, bool)
  spans = word_spans(ids)
  chosen = 0
  for start, end in spans[rng.permutation(len(spans))]:
    if chosen >= budget:
      break
    if chosen + (end - start) <= budget:
      selected[start:end] = True
      chosen += end - start
  u = rng.random(ids.shape)
  random_ids = rng.integers(TOKENIZER.num_reserved_tokens, TOKENIZER.vocab_size,
                            size=ids.shape, dtype=np.int32)
  inputs = np.where(selected & (u < mask_token_fraction), TOKENIZER.mask_token, ids)
  use_random = selected & (u >= mask_token_fraction) & \
      (u < mask_token_fraction + random_token_fraction)
  inputs = np.where(use_random, random_ids, inputs)
  return {'inputs': inputs.astype(np.int32), 'input_mask': input_mask,
          'targets': ids, 'weights': selected.astype(np.float32)}


def mask_batch(windows: np.ndarray, rng: np.random.Generator, **kwargs) -> dict:
  """`mask_whole_words` over windows int [B, T]; every value gets a leading B."""
  windows = np.asarray(windows)
  if windows.ndim != 2:
    raise ValueError(f'windows: expected rank 2 [B, T], got shape {windows.shape}.')
  rows = [mask_whole_words(w, rng, **kwargs) for w in windows]
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
