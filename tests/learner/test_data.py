"""The loop's data path: train_batch adapter, a task's own train_iterator and its hooks."""

import dataclasses

import jax
import numpy as np

from perceiver_agents import learner
from perceiver_agents.learner import data as data_lib


def test_the_default_iterator_yields_train_batch_from_the_start_step(toy):
  task, _ = toy()
  iterator = data_lib.train_iterator(task, 7)
  for step in (7, 8):
    got, want = next(iterator), task.train_batch(step)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b)


class _Recording:
  """train_batch(step) as an iterator with every optional hook, recording the calls."""

  def __init__(self, task, start_step, calls, restored):
    self._task, self._step, self._calls, self._restored = task, start_step, calls, restored
    calls.append(('start', start_step))

  def __iter__(self):
    return self

  def __next__(self):
    self._calls.append(('next', self._step))
    self._step += 1
    return self._task.train_batch(self._step - 1)

  def publish(self, params, step):
    assert jax.tree.structure(params) is not None
    self._calls.append(('publish', step))

  def metrics(self):
    return {'host_metric': float(self._step)}

  def get_state(self):
    return {'step': self._step}

  def set_state(self, state):
    self._restored.append(state)

  def close(self):
    self._calls.append(('close', self._step))


def test_train_iterator_hooks_are_called_in_order_and_its_state_resumes(toy, tmp_path):
  task, config = toy('train.steps=4', 'checkpoint.every=2', 'train.log_every=2',
                     'eval.every=0')
  calls, restored = [], []
  task = dataclasses.replace(
      task, train_iterator=lambda start: _Recording(task, start, calls, restored))
  workdir = str(tmp_path / 'run')
  config.train.steps = 2
  learner.train(task, config, workdir)
  # Parameters are published before each batch is asked for; nothing past the end.
  assert calls == [('start', 0), ('publish', 0), ('next', 0), ('publish', 1), ('next', 1),
                   ('publish', 2), ('close', 2)]
  records = [r for r in learner.read_metrics(workdir) if r['split'] == 'train']
  assert records[-1]['host_metric'] == 2.0
  calls.clear()
  config.train.steps = 4
  learner.train(task, config, workdir)
  assert restored == [{'step': 2}]
  assert calls[:3] == [('start', 2), ('publish', 2), ('next', 2)]
