"""Tests for the UTF-8 bytes tokenizer (DeepMind's Perceiver IO ids)."""

import numpy as np
import pytest

from perceiver_agents.encoders.text import BytesTokenizer


@pytest.fixture
def tok():
  return BytesTokenizer()


def test_reserved_ids_and_vocab(tok):
  assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.mask_token, tok.cls_token,
          tok.sep_token) == (0, 1, 2, 3, 4, 5)
  assert tok.num_reserved_tokens == 6
  assert tok.vocab_size == 262


@pytest.mark.parametrize('text', ['', 'hello', 'héllo wörld', '日本語 🙂', '\x00\xff'])
def test_round_trip(tok, text):
  ids = tok.to_int(text)
  assert ids.dtype == np.int32 and ids.ndim == 1
  assert len(ids) == len(text.encode('utf-8'))
  assert tok.to_string(ids) == text


def test_bytes_shift_by_six(tok):
  np.testing.assert_array_equal(tok.to_int('A\x00'), [65 + 6, 6])
  np.testing.assert_array_equal(tok.to_int(b'\xff'), [261])


def test_to_string_drops_reserved_ids_and_replaces_bad_utf8(tok):
  ids = np.concatenate([[tok.bos_token], tok.to_int('hi'), [tok.eos_token, 0, 0]])
  assert tok.to_string(ids) == 'hi'
  assert tok.to_string([0xC3 + 6]) == '\ufffd'  # a lone UTF-8 lead byte
  assert tok.to_string([]) == ''


def test_pad_batch(tok):
  ids, mask = tok.pad_batch([tok.to_int('abc'), tok.to_int(''), [1, 2]], 4)
  assert ids.shape == mask.shape == (3, 4)
  assert ids.dtype == np.int32 and mask.dtype == bool
  np.testing.assert_array_equal(ids[0], [103, 104, 105, 0])
  np.testing.assert_array_equal(ids[1], [0, 0, 0, 0])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0]])


def test_pad_batch_errors(tok):
  with pytest.raises(ValueError, match=r'sequences\[1\].*length 5.*max_len=4'):
    tok.pad_batch([[7], [7] * 5], 4)
  for bad in (0, -1, 2.0, True):
    with pytest.raises(ValueError, match='max_len'):
      tok.pad_batch([[7]], bad)
  with pytest.raises(ValueError, match=r'sequences\[0\].*rank 1'):
    tok.pad_batch([[[7]]], 4)
  with pytest.raises(ValueError, match='sequences'):
    tok.pad_batch(np.array([[7]]), 4)


def test_bad_ids_and_text(tok):
  with pytest.raises(ValueError, match=r'ids.*\[0, 262\)'):
    tok.to_string([262])
  with pytest.raises(ValueError, match=r'ids.*\[0, 262\)'):
    tok.to_string([-1])
  with pytest.raises(ValueError, match='integer'):
    tok.to_string([7.0])
  with pytest.raises(ValueError, match='rank 1'):
    tok.to_string([[7]])
  with pytest.raises(ValueError, match='text'):
    tok.to_int(123)
