"""Tests of perceiver_agents/data/text.py: corpora, packing, whole-word masking."""

import numpy as np
import pytest

from perceiver_agents.data import text as text_data

TOK = text_data.TOKENIZER
SENTENCE = ('the quick brown fox jumps over the lazy dog while seven wizards quietly '
            'hex jovial bakers ')


def _window(text: str, pad: int) -> np.ndarray:
  return np.concatenate([text_data.encode(text), np.full([pad], TOK.pad_token, np.int32)])


def test_masking_never_selects_pad_special_ids_or_whitespace():
  ids = np.concatenate([[TOK.cls_token], text_data.encode(SENTENCE * 3), [TOK.eos_token],
                        np.zeros([200], np.int32)]).astype(np.int32)
  rng = np.random.default_rng(0)
  for _ in range(50):
    out = text_data.mask_whole_words(ids, rng)
    selected = out['weights'] > 0
    assert not selected[ids == TOK.pad_token].any()
    assert not selected[ids < TOK.num_reserved_tokens].any()
    assert not selected[ids == ord(' ') + 6].any()
    np.testing.assert_array_equal(out['inputs'][ids == TOK.pad_token], TOK.pad_token)
    np.testing.assert_array_equal(out['input_mask'], ids != TOK.pad_token)
    np.testing.assert_array_equal(out['targets'], ids)
    # Unselected positions are never corrupted.
    np.testing.assert_array_equal(out['inputs'][~selected], ids[~selected])


def test_masking_selects_whole_words_at_the_rate():
  ids = _window(SENTENCE * 20, pad=300)
  spans = text_data.word_spans(ids)
  real = int((ids != TOK.pad_token).sum())
  out = text_data.mask_whole_words(ids, np.random.default_rng(1))
  selected = out['weights'] > 0
  for start, end in spans:
    assert selected[start:end].all() or not selected[start:end].any()
  budget = round(0.15 * real)
  # Words are at most 7 bytes long here, so the greedy fill ends within one word.
  assert budget - 7 <= selected.sum() <= budget


def test_mask_random_keep_mix_is_80_10_10():
  ids = _window(SENTENCE * 60, pad=0)
  rng = np.random.default_rng(2)
  counts = np.zeros(3)
  for _ in range(20):
    out = text_data.mask_whole_words(ids, rng)
    sel = out['weights'] > 0
    is_mask = out['inputs'][sel] == TOK.mask_token
    same = out['inputs'][sel] == ids[sel]
    counts += [is_mask.sum(), (~is_mask & ~same).sum(), same.sum()]
  fractions = counts / counts.sum()
  # Random replacements equal the original byte 1/256 of the time, counted as "same".
  np.testing.assert_allclose(fractions, [0.8, 0.1, 0.1], atol=0.02)


def test_mask_batch_is_deterministic_in_the_rng():
  windows = np.stack([_window(SENTENCE, 10), _window(SENTENCE[::-1], 10)])
  a = text_data.mask_batch(windows, np.random.default_rng(5))
  b = text_data.mask_batch(windows, np.random.default_rng(5))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert a['inputs'].shape == windows.shape


def test_masking_rejects_bad_arguments():
  with pytest.raises(ValueError, match='rank 1'):
    text_data.mask_whole_words(np.zeros([2, 3], np.int32), np.random.default_rng(0))
  with pytest.raises(ValueError, match='mask_rate'):
    text_data.mask_whole_words(np.zeros([3], np.int32), np.random.default_rng(0),
                               mask_rate=1.5)


def test_pack_documents_separates_with_eos_and_pads_the_last_window():
  windows = list(text_data.pack_documents(['ab', '', 'cde'], window=4))
  assert len(windows) == 2
  e = TOK.eos_token
  np.testing.assert_array_equal(windows[0], [ord('a') + 6, ord('b') + 6, e, ord('c') + 6])
  np.testing.assert_array_equal(windows[1], [ord('d') + 6, ord('e') + 6, e, TOK.pad_token])
  with pytest.raises(ValueError, match='no text'):
    text_data.pack_all(['', ''], window=4)


def test_read_text_files_units_and_bad_files(tmp_path):
  (tmp_path / 'a.txt').write_text('first line\nsecond line\n\npara two\n', encoding='utf-8')
  (tmp_path / 'b.txt').write_text('héllo wörld', encoding='utf-8')
  pattern = str(tmp_path / '*.txt')
  assert text_data.read_text_files(pattern, unit='line') == [
      'first line', 'second line', 'para two', 'héllo wörld']
  assert text_data.read_text_files(pattern, unit='paragraph') == [
      'first line\nsecond line', 'para two', 'héllo wörld']
  assert len(text_data.read_text_files(pattern, unit='file')) == 2
  with pytest.raises(ValueError, match='no file matches'):
    text_data.read_text_files(str(tmp_path / '*.md'))
  with pytest.raises(ValueError, match='document_unit'):
    text_data.read_text_files(pattern, unit='sentence')
  (tmp_path / 'c.txt').write_bytes('price: £3'.encode('latin-1'))
  with pytest.raises(ValueError, match=r'c\.txt: not valid UTF-8 at byte offset 7'):
    text_data.read_text_files(pattern)


def test_split_by_document_is_disjoint_and_seeded():
  docs = [f'document {i}' for i in range(20)]
  train, held = text_data.split_by_document(docs, eval_fraction=0.2, seed=0)
  assert len(held) == 4 and len(train) == 16
  assert set(train).isdisjoint(held) and set(train) | set(held) == set(docs)
  assert (train, held) == text_data.split_by_document(docs, eval_fraction=0.2, seed=0)
  with pytest.raises(ValueError, match='at least 2'):
    text_data.split_by_document(['one'], eval_fraction=0.5)


def test_window_stream_gives_the_same_batch_for_a_step_in_any_order():
  docs = [f'doc number {i} ' * (i % 3 + 1) for i in range(12)]
  stream = text_data.WindowStream(lambda: iter(docs), window=16, batch_size=3)
  sequential = [stream.batch(s) for s in range(4)]
  fresh = text_data.WindowStream(lambda: iter(docs), window=16, batch_size=3)
  np.testing.assert_array_equal(fresh.batch(3), sequential[3])
  np.testing.assert_array_equal(fresh.batch(1), sequential[1])
  every = text_data.pack_all(docs, 16)
  # The stream repeats the corpus: window k of the stream is window k % len(every).
  flat = np.concatenate(sequential)
  np.testing.assert_array_equal(flat, every[np.arange(12) % len(every)])


def test_tfds_documents_stream_mock_c4_and_wikipedia():
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    streams = [lambda n=n: text_data.tfds_documents(text_data.TFDS_SOURCES[n][0],
                                                    text_data.TFDS_SOURCES[n][1])
               for n in ('c4', 'wikipedia')]
    docs = list(text_data.interleave(streams))
  assert len(docs) == 6 and all(isinstance(d, bytes) for d in docs)
