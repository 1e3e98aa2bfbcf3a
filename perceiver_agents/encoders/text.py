"""Text as UTF-8 bytes: the tokenizer of DeepMind's Perceiver IO language model.

Ids 0-5 are reserved (PAD, BOS, EOS, MASK, CLS, SEP); byte ``b`` is id ``b + 6``, so the
vocabulary has 6 + 256 = 262 ids. This matches ``perceiver/bytes_tokenizer.py`` of the
released model, whose checkpoint (and ``zoo.language_perceiver(vocab_size=262)``) expects
exactly these ids.

Shape letters: B batch, T sequence length (tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_NUM_RESERVED_TOKENS = 6
_NUM_BYTES = 256


class BytesTokenizer:
  """Maps text to UTF-8 byte ids and back; ids 0-5 are reserved special tokens.

  Example::

    tok = BytesTokenizer()
    ids = tok.to_int('héllo')             # int32 [7]: 'é' is two bytes
    tok.to_string(ids)                    # 'héllo'
    batch, mask = tok.pad_batch([ids, tok.to_int('hi')], max_len=8)  # [2, 8] each
  """

  @property
  def num_reserved_tokens(self) -> int:
    return _NUM_RESERVED_TOKENS

  @property
  def vocab_size(self) -> int:
    return _NUM_RESERVED_TOKENS + _NUM_BYTES

  @property
  def pad_token(self) -> int:
    return 0

  @property
  def bos_token(self) -> int:
    return 1

  @property
  def eos_token(self) -> int:
    return 2

  @property
  def mask_token(self) -> int:
    return 3

  @property
  def cls_token(self) -> int:
    return 4

  @property
  def sep_token(self) -> int:
    return 5

  def to_int(self, text: str | bytes) -> np.ndarray:
    """Encodes ``text`` as int32 [T] ids: its UTF-8 bytes shifted past the reserved ids.

    ``bytes`` are taken as already encoded (as in DeepMind's tokenizer).
    """
    if isinstance(text, str):
      text = text.encode('utf-8')
    elif not isinstance(text, (bytes, bytearray)):
      raise ValueError(f'to_int(text=...): expected str or bytes, got '
                       f'{type(text).__name__}.')
    ids = np.frombuffer(bytes(text), dtype=np.uint8).astype(np.int32)  # [T]
    return ids + np.int32(_NUM_RESERVED_TOKENS)

  def to_string(self, ids: np.ndarray | Sequence[int]) -> str:
    """Decodes int [T] ids to text; reserved ids are dropped, bad UTF-8 becomes U+FFFD."""
    ids = self._check_ids(ids, argument='ids')
    byte_ids = ids[ids >= _NUM_RESERVED_TOKENS] - _NUM_RESERVED_TOKENS  # [T'] in 0..255
    return byte_ids.astype(np.uint8).tobytes().decode('utf-8', errors='replace')

  def pad_batch(self, sequences: Sequence[np.ndarray | Sequence[int]],
                max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads id sequences with ``pad_token`` into one batch.

    Args:
      sequences: B sequences of ids, each int [T_i] with T_i <= max_len.
      max_len: T, the padded length.

    Returns:
      ids: int32 [B, T], padded with ``pad_token``.
      mask: bool [B, T], True at real tokens, False at padding.
    """
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) \
        or max_len < 1:
      raise ValueError(f'pad_batch(max_len={max_len!r}): expected a positive int.')
    if isinstance(sequences, (str, bytes, np.ndarray)) or not isinstance(sequences,
                                                                         Sequence):
      raise ValueError('pad_batch(sequences=...): expected a list of id arrays (one per '
                       f'example), got {type(sequences).__name__}.')
    ids = np.full((len(sequences), max_len), self.pad_token, dtype=np.int32)  # [B, T]
    mask = np.zeros((len(sequences), max_len), dtype=bool)  # [B, T]
    for i, sequence in enumerate(sequences):
      sequence = self._check_ids(sequence, argument=f'sequences[{i}]')
      if sequence.shape[0] > max_len:
        raise ValueError(f'pad_batch(sequences[{i}]=...): length {sequence.shape[0]} is '
                         f'longer than max_len={max_len}; truncate it first.')
      ids[i, :sequence.shape[0]] = sequence
      mask[i, :sequence.shape[0]] = True
    return ids, mask

  def _check_ids(self, ids: np.ndarray | Sequence[int], *, argument: str) -> np.ndarray:
    """Returns ``ids`` as int32 [T], or raises naming ``argument``."""
    array = np.asarray(ids)
    if array.ndim != 1:
      raise ValueError(f'{argument}: expected ids of rank 1 [T], got shape {array.shape}.')
    if array.size == 0:
      return array.astype(np.int32)  # np.asarray([]) is float64; empty is still fine
    if array.dtype.kind not in 'iu':
      raise ValueError(f'{argument}: expected integer ids, got dtype {array.dtype}.')
    if array.min() < 0 or array.max() >= self.vocab_size:
      raise ValueError(f'{argument}: ids must lie in [0, {self.vocab_size}), got range '
                       f'[{array.min()}, {array.max()}].')
    return array.astype(np.int32)
