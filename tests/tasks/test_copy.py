"""Tests of tasks/copy.py: example layout, config checks, and a short run of the learner."""
import json

import numpy as np
import pytest

from perceiver_agents import learner
from perceiver_agents.tasks import base
from perceiver_agents.tasks import copy as copy_task


def _config(**data):
  """The local preset: max_context 32, 8 latents, copy_length 6, batches of 4."""
  return base.make_config(copy_task, ['preset=local'] +
                          [f'data.{key}={value}' for key, value in data.items()])


@pytest.mark.parametrize('filler', ['pad', 'random'])
def test_examples_layout(filler):
  config = _config(filler=filler)
  n, m, s = 32, 8, 6
  ex = copy_task.make_examples(np.random.default_rng(0), 5, config)
  assert ex['inputs'].shape == (5, n) and ex['targets'].shape == (5, m)
  sequence = np.concatenate([ex['inputs'], ex['targets'][:, -1:]], axis=1)  # [5, N + 1]
  source = sequence[:, :s]
  assert source.min() >= copy_task.NUM_SPECIAL
  np.testing.assert_array_equal(sequence[:, n - s], copy_task.SEP)
  np.testing.assert_array_equal(sequence[:, n + 1 - s:], source)
  # Targets are the next tokens of the last M inputs; weights mark exactly the copy.
  np.testing.assert_array_equal(ex['targets'][:, :-1], ex['inputs'][:, n - m + 1:])
  np.testing.assert_array_equal(ex['weights'].sum(axis=1), s)
  np.testing.assert_array_equal(ex['targets'][ex['weights'] == 1].reshape(5, s), source)
  filler_part = sequence[:, s:n - s]
  if filler == 'pad':
    np.testing.assert_array_equal(filler_part, copy_task.PAD)
  else:
    assert filler_part.min() >= copy_task.NUM_SPECIAL
  assert not np.array_equal(source[0], source[1])


def test_batches_are_deterministic_per_step():
  task = copy_task.build(_config())
  np.testing.assert_array_equal(task.train_batch(3)['inputs'], task.train_batch(3)['inputs'])
  assert not np.array_equal(task.train_batch(3)['inputs'], task.train_batch(4)['inputs'])


@pytest.mark.parametrize('data, match', [
    (dict(copy_length=9), r'data.copy_length \(9\) must be between 1 and model.num_latents'),
    (dict(filler='zeros'), 'data.filler must be one of'),
    (dict(num_symbols=0), 'data.num_symbols must be >= 1'),
])
def test_bad_config(data, match):
  with pytest.raises(ValueError, match=match):
    copy_task.build(_config(**data))


def test_trains_through_the_learner(tmp_path):
  config = _config()
  config.train.steps = 6
  config.train.log_every = 3
  config.train.progress_bar = False
  result = learner.train(copy_task.build(config), config, str(tmp_path))
  assert result.step == 6
  assert set(result.eval_metrics) == {'loss', 'copy_accuracy', 'sequence_accuracy'}
  assert 0.0 <= result.eval_metrics['copy_accuracy'] <= 1.0
  assert np.isfinite(result.eval_metrics['loss'])
  records = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert [r['step'] for r in records if r['split'] == 'train'] == [3, 6]
