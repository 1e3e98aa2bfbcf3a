"""The loop's outputs: metrics.jsonl, TensorBoard files, evaluation, signals."""

import dataclasses
import glob
import os
import signal

import jax
import numpy as np
import pytest

from perceiver_agents import learner


def test_writes_metrics_and_event_files(tmp_path, toy):
  task, config = toy('train.steps=20', 'train.log_every=5', 'eval.every=10',
                     'checkpoint.every=10')
  result = learner.train(task, config, str(tmp_path))
  assert glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  assert (tmp_path / 'config.json').exists()
  records = learner.read_metrics(str(tmp_path))
  train = [r for r in records if r['split'] == 'train']
  evals = [r for r in records if r['split'] == 'eval']
  assert [r['step'] for r in train] == [5, 10, 15, 20]
  assert [r['step'] for r in evals] == [10, 20]
  assert {'loss', 'accuracy', 'grad_norm', 'learning_rate', 'examples_per_s'} <= set(train[0])
  assert result.eval_metrics == {k: v for k, v in evals[-1].items()
                                 if k not in ('step', 'split')}
  assert 0.0 <= result.eval_metrics['accuracy'] <= 1.0


def test_progress_bar_shows_eta(tmp_path, toy, capsys):
  task, config = toy('train.steps=10', 'train.progress_bar=true', 'eval.every=0')
  learner.train(task, config, str(tmp_path))
  err = capsys.readouterr().err
  assert '10/10' in err and '<' in err and 'loss=' in err and 'ex_per_s=' in err


def test_sigterm_saves_checkpoint_and_stops(tmp_path, toy):
  task, config = toy('train.steps=50', 'checkpoint.every=0', 'eval.every=0')

  def train_batch(step):
    if step == 7:
      os.kill(os.getpid(), signal.SIGTERM)
    return task.train_batch(step)

  result = learner.train(dataclasses.replace(task, train_batch=train_batch), config,
                         str(tmp_path))
  assert result.interrupted_by == signal.SIGTERM
  assert 7 < result.step < 50
  checkpoints = learner.Checkpointer(str(tmp_path / 'checkpoints'))
  assert checkpoints.latest_step() == result.step


def test_rejects_batch_not_divisible_by_devices(toy):
  task, config = toy('train.batch_size=0')
  with pytest.raises(ValueError, match='train.batch_size'):
    learner.build_programs(task, config)


def test_bfloat16_compute_keeps_float32_params(tmp_path, toy):
  task, config = toy('train.steps=5', 'train.compute_dtype=bfloat16', 'eval.every=0')
  result = learner.train(task, config, str(tmp_path))
  assert np.isfinite(result.train_metrics['loss'])
  _, ts = learner.load_state(task, config, str(tmp_path))
  assert {x.dtype for x in jax.tree.leaves(ts.params)} == {np.dtype('float32')}


def test_bad_compute_dtype_names_field(toy):
  task, config = toy('train.compute_dtype=float16')
  with pytest.raises(ValueError, match='train.compute_dtype'):
    learner.build_programs(task, config)


def test_update_and_eval_compile_once_per_run(tmp_path, toy, monkeypatch):
  import chex  # pylint: disable=g-import-not-at-top
  from perceiver_agents.learner import update as update_lib  # pylint: disable=g-import-not-at-top
  for name in ('make_update_fn', 'make_eval_fn'):
    make = getattr(update_lib, name)
    monkeypatch.setattr(
        update_lib, name,
        lambda *a, _make=make, **k: chex.assert_max_traces(_make(*a, **k), n=1))
  # Logging, evaluation, checkpoints and a partial last eval batch along the way.
  task, config = toy('train.steps=6', 'train.log_every=2', 'eval.every=3',
                     'checkpoint.every=2', 'eval.batch_size=48')
  result = learner.train(task, config, str(tmp_path))
  assert result.step == 6
  # A resumed run builds (and traces) its programs anew, once.
  chex.clear_trace_counter()
  task, config = toy('train.steps=8', 'train.log_every=2', 'eval.every=3',
                     'checkpoint.every=2', 'eval.batch_size=48')
  assert learner.train(task, config, str(tmp_path)).step == 8
