"""Tests of tasks/byte_lm.py: file splits, eval windows, the bigram baseline, a short
training run, and `perceiver-agents generate byte_lm` on its checkpoint."""
import math

import numpy as np
import pytest

from perceiver_agents import cli
from perceiver_agents import learner
from perceiver_agents.tasks import byte_lm

TEXT = ('The quick brown fox jumps over the lazy dog. ' * 30 +
        'Pack my box with five dozen liquor jugs! ' * 30)


def _config(files):
  config = byte_lm.get_config()
  config.data.files = files
  config.data.eval_fraction = 0.25
  config.model.max_context = 32
  config.model.num_latents = 8
  config.model.num_channels = 16
  config.model.num_heads = 2
  config.model.num_cross_heads = 1
  config.model.num_layers = 1
  config.train.batch_size = 4
  config.eval.batch_size = 16
  return config


@pytest.fixture
def corpus(tmp_path):
  (tmp_path / 'a.txt').write_text(TEXT[:1500], encoding='utf-8')
  (tmp_path / 'b.txt').write_text(TEXT[1500:] + ' héllo wörld', encoding='utf-8')
  return tmp_path


def test_splits_are_the_files_bytes_in_order(corpus):
  splits = byte_lm.load_splits(_config(str(corpus / '*.txt')))
  data = (corpus / 'a.txt').read_bytes() + b'\n' + (corpus / 'b.txt').read_bytes()
  ids = np.concatenate([splits['train'], splits['eval']])
  assert bytes((ids - 6).astype(np.uint8)) == data
  assert len(splits['eval']) == pytest.approx(0.25 * len(data), abs=1)


def test_eval_windows_score_each_held_out_byte_once():
  ids = np.arange(100, dtype=np.int32)
  starts = byte_lm.eval_starts(len(ids), context=16, num_latents=4)
  batch = byte_lm.windows(ids, starts, context=16, num_latents=4)
  scored = batch['targets'].ravel()
  assert len(set(scored.tolist())) == len(scored)  # each at most once
  np.testing.assert_array_equal(scored, np.arange(13, 13 + len(scored)))  # contiguous
  assert scored[-1] >= 100 - 4  # up to the last partial stride
  # Every target is the byte after its input position, with N bytes of context.
  np.testing.assert_array_equal(batch['targets'][:, 0], batch['inputs'][:, -4] + 1)


def test_bigram_baseline():
  k = 6
  train = np.array([0, 1, 0, 1, 0, 1], np.int32) + k
  eval_set = {'inputs': np.array([[0, 1, 0]], np.int32) + k,
              'targets': np.array([[0, 1]], np.int32) + k}
  # Targets: 0 after 1, then 1 after 0. Add-one counts: 1 -> 0 seen 2 times (of 2 + 256
  # with smoothing), 0 -> 1 seen 3 times (of 3 + 256).
  expected = -(math.log2(4 / 259) + math.log2(3 / 258)) / 2
  assert byte_lm.bigram_bits_per_byte(train, eval_set) == pytest.approx(expected)


def test_bad_data_config(corpus, tmp_path):
  with pytest.raises(ValueError, match='data.files: no file matches'):
    byte_lm.load_splits(_config(str(tmp_path / 'missing*.txt')))
  config = _config(str(corpus / '*.txt'))
  config.model.max_context = 4096
  with pytest.raises(ValueError, match='fewer than model.max_context'):
    byte_lm.load_splits(config)
  config = _config(str(corpus / '*.txt'))
  config.data.source = 'web'
  with pytest.raises(ValueError, match='data.source must be one of'):
    byte_lm.load_splits(config)


def test_train_then_generate_from_the_command_line(corpus, tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  files = str(corpus / '*.txt')
  overrides = ['--config.preset=local', f'--config.data.files={files}',
               '--config.data.eval_fraction=0.25',
               '--config.train.steps=4', '--config.train.progress_bar=false',
               '--config.eval.every=0', '--config.checkpoint.every=0']
  assert cli.main(['train', 'byte_lm', '--workdir', workdir] + overrides) == 0
  out = capsys.readouterr().out
  assert '"bits_per_byte"' in out
  assert cli.main(['generate', 'byte_lm', '--checkpoint', workdir, '--prompt', 'The qu',
                   '--num-bytes', '5', '--temperature', '0']) == 0
  text = capsys.readouterr().out
  assert text.startswith('The qu') and len(text.encode()) >= len('The qu') + 1
  # The same greedy continuation twice.
  assert cli.main(['generate', 'byte_lm', '--checkpoint', workdir, '--prompt', 'The qu',
                   '--num-bytes', '5', '--temperature', '0']) == 0
  assert capsys.readouterr().out == text
  for args, message in (
      (['--prompt', ''], '--prompt is empty'),
      (['--prompt', 'x' * 40], 'longer than the model context (32 bytes)'),
      (['--prompt', 'x' * 30, '--num-bytes', '5'], "exceeds the model's context"),
      (['--prompt', 'ab', '--temperature', '-1'], 'temperature must be >= 0'),
      (['--prompt', 'ab', '--top-p', '0'], 'top_p must be in'),
      (['--prompt', 'ab', '--top-k', '-2'], 'top_k must be an integer'),
  ):
    assert cli.main(['generate', 'byte_lm', '--checkpoint', workdir] + args) == 2
    assert message in capsys.readouterr().err
  assert cli.main(['generate', 'byte_lm', '--checkpoint', str(tmp_path / 'nothing'),
                   '--prompt', 'ab']) == 2
  assert 'is not a training workdir' in capsys.readouterr().err


def test_generate_from_a_run_whose_latest_checkpoint_is_damaged(corpus, tmp_path, capsys):
  import os  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  overrides = ['--config.preset=local', f'--config.data.files={corpus / "*.txt"}',
               '--config.data.eval_fraction=0.25',
               '--config.train.steps=2', '--config.train.progress_bar=false',
               '--config.eval.every=0', '--config.checkpoint.every=1']
  assert cli.main(['train', 'byte_lm', '--workdir', workdir] + overrides) == 0
  capsys.readouterr()
  os.remove(os.path.join(workdir, 'checkpoints', '2', 'default', '_METADATA'))
  assert cli.main(['generate', 'byte_lm', '--checkpoint', workdir, '--prompt', 'The qu',
                   '--num-bytes', '3', '--temperature', '0']) == 0
  captured = capsys.readouterr()
  assert captured.out.startswith('The qu')
  err = [l for l in captured.err.splitlines() if l.strip()]
  assert len(err) == 2, err
  assert 'checkpoint 2' in err[0] and '_METADATA' in err[0]
  assert 'using checkpoint 1' in err[1]
