"""Checkpoints: atomic under SIGKILL, keep the last N."""

import os
import signal

from perceiver_agents import learner


def test_sigkill_while_writing_leaves_loadable_latest(tmp_path, toy, child):
  overrides = ['train.steps=50', 'checkpoint.every=1', 'eval.every=0']
  workdir = str(tmp_path / 'run')
  proc = child.start({'mode': 'train', 'workdir': workdir, 'overrides': overrides,
                      'block_finalize_at': 3})
  for line in proc.stdout:  # Wait until step 3's save is written but not committed.
    if 'BLOCKED' in line:
      break
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  names = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert any(name.startswith('3') and 'tmp' in name for name in names), names

  task, config = toy(*overrides)
  assert learner.Checkpointer(os.path.join(workdir, 'checkpoints')).latest_step() == 2
  _, ts = learner.load_state(task, config, workdir)
  assert int(ts.step) == 2

  task, config = toy('train.steps=5', 'checkpoint.every=1', 'eval.every=0')
  assert learner.train(task, config, workdir).step == 5
  names = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert not any('tmp' in name for name in names), names


def test_keeps_last_n(tmp_path, toy):
  task, config = toy('train.steps=6', 'checkpoint.every=1', 'checkpoint.keep=2',
                     'eval.every=0')
  learner.train(task, config, str(tmp_path))
  checkpoints = learner.Checkpointer(str(tmp_path / 'checkpoints'))
  assert checkpoints.all_steps() == [5, 6]


def test_async_save_round_trip(tmp_path, toy):
  task, config = toy('train.steps=4', 'checkpoint.every=2', 'checkpoint.async_save=true',
                     'eval.every=0')
  learner.train(task, config, str(tmp_path))
  _, ts = learner.load_state(task, config, str(tmp_path))
  assert int(ts.step) == 4


def test_restore_as_saved_needs_no_target(tmp_path, toy):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  task, config = toy('train.steps=3', 'checkpoint.every=1', 'eval.every=0')
  learner.train(task, config, str(tmp_path))
  _, ts = learner.load_state(task, config, str(tmp_path))  # Through a target.
  checkpoints = learner.Checkpointer(str(tmp_path / 'checkpoints'))
  saved = checkpoints.restore_as_saved()
  for got, want in zip(jax.tree.leaves(saved['params']), jax.tree.leaves(ts.params)):
    np.testing.assert_array_equal(got, want)
  assert int(saved['step']) == 3
  empty = learner.Checkpointer(str(tmp_path / 'empty'))
  with pytest.raises(ValueError, match='no checkpoint'):
    empty.restore_as_saved()
