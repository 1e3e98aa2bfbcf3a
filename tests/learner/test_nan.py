"""A NaN loss stops the run, names the step and leaves the last good checkpoint alone."""

import os

import jax
import numpy as np
import pytest

from perceiver_agents import learner


def test_nan_stops_run_and_keeps_previous_checkpoint(tmp_path, toy):
  task, config = toy('train.steps=40', 'checkpoint.every=10', 'train.log_every=5',
                     'eval.every=0', 'data.nan_at_step=17')
  with pytest.raises(learner.NonFiniteLossError, match='step 17'):
    learner.train(task, config, str(tmp_path))
  checkpoints = learner.Checkpointer(str(tmp_path / 'checkpoints'))
  assert checkpoints.all_steps() == [10]
  _, ts = learner.load_state(task, config, str(tmp_path))
  assert int(ts.step) == 10
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(ts.params)))
  records = learner.read_metrics(str(tmp_path))
  assert max(r['step'] for r in records) < 17
  assert os.path.isdir(tmp_path / 'checkpoints' / '10')
