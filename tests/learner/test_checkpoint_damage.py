"""Damaged checkpoints: detected, skipped with one warning naming step and file, and the
newest intact one restored; a model that does not fit is named as such."""

import os
import shutil

import jax
import numpy as np
import pytest

from perceiver_agents import learner
from perceiver_agents.learner import checkpoint as checkpoint_lib

OVERRIDES = ('train.steps=3', 'checkpoint.every=1', 'eval.every=0')


def largest_array_file(step_dir: str) -> str:
  """The largest data file of the (merged) OCDBT store that restoring reads."""
  folder = os.path.join(step_dir, 'default', 'd')
  return max((os.path.join(folder, n) for n in os.listdir(folder)), key=os.path.getsize)


def truncate(step_dir):
  path = largest_array_file(step_dir)
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  return path


def zero_fill(step_dir):
  path = largest_array_file(step_dir)
  size = os.path.getsize(path)
  with open(path, 'wb') as f:
    f.write(b'\0' * size)
  return path


def delete_metadata(step_dir):
  path = os.path.join(step_dir, 'default', '_METADATA')
  os.remove(path)
  return path


def delete_partly(step_dir):
  """As a deletion (or a copy) of the step stopped half-way: the arrays are gone."""
  path = os.path.join(step_dir, 'default')
  shutil.rmtree(path)
  return path


DAMAGES = {'truncate': truncate, 'zero_fill': zero_fill,
           'delete_metadata': delete_metadata, 'delete_partly': delete_partly}


@pytest.fixture
def trained(tmp_path_factory, toy):
  """A finished toy run with checkpoints 1, 2, 3 (copied afresh for each test)."""
  template = tmp_path_factory.getbasetemp() / 'damage_template'
  if not template.exists():
    task, config = toy(*OVERRIDES)
    learner.train(task, config, str(template))
  def copy(dest):
    shutil.copytree(template, dest)
    return str(dest)
  return copy


@pytest.mark.parametrize('damage', sorted(DAMAGES))
@pytest.mark.parametrize('manifest', [True, False], ids=['manifest', 'no_manifest'])
def test_eval_falls_back_to_the_previous_step(trained, tmp_path, toy, capsys, damage,
                                              manifest):
  workdir = trained(tmp_path / 'run')
  if not manifest:  # As checkpoints written before manifests existed.
    for step in (1, 2, 3):
      os.remove(os.path.join(workdir, 'checkpoints', str(step), checkpoint_lib.MANIFEST))
  if damage == 'zero_fill' and not manifest:
    pytest.skip('without a manifest, zeroed bytes can only be found by reading them')
  step_dir = os.path.join(workdir, 'checkpoints', '3')
  damaged = DAMAGES[damage](step_dir)
  task, config = toy(*OVERRIDES)
  step, _ = learner.evaluate(task, config, workdir)
  assert step == 2
  warnings = [l for l in capsys.readouterr().err.splitlines() if 'warning' in l]
  assert len(warnings) == 1, warnings
  assert 'checkpoint 3' in warnings[0] and 'trying step 2' in warnings[0]
  if manifest or damage in ('delete_metadata',):
    assert damaged in warnings[0]


@pytest.mark.parametrize('damage', sorted(DAMAGES))
def test_resumed_train_moves_the_damaged_step_aside_and_continues(trained, tmp_path, toy,
                                                                   capsys, damage):
  workdir = trained(tmp_path / 'run')
  DAMAGES[damage](os.path.join(workdir, 'checkpoints', '3'))
  task, config = toy('train.steps=4', 'checkpoint.every=1', 'eval.every=0')
  result = learner.train(task, config, workdir)
  assert result.step == 4
  err = capsys.readouterr().err
  assert 'checkpoint 3' in err and 'moved damaged checkpoint 3 to' in err
  aside = os.listdir(os.path.join(workdir, 'checkpoints.damaged'))
  assert len(aside) == 1 and aside[0].startswith('3-')  # Kept, not deleted.
  assert learner.Checkpointer(os.path.join(workdir, 'checkpoints')).all_steps() == [2, 3, 4]


def test_resume_from_a_fallback_equals_an_uninterrupted_run(trained, tmp_path, toy):
  workdir = trained(tmp_path / 'run')
  truncate(os.path.join(workdir, 'checkpoints', '3'))
  task, config = toy(*OVERRIDES)
  learner.train(task, config, workdir)  # Redoes step 3 from checkpoint 2.
  _, resumed = learner.load_state(task, config, workdir)
  fresh = trained(tmp_path / 'fresh')
  _, original = learner.load_state(task, config, fresh)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed),
               jax.device_get(original))


def test_every_checkpoint_damaged_is_one_error_naming_each(trained, tmp_path, toy):
  workdir = trained(tmp_path / 'run')
  for step in (1, 2, 3):
    truncate(os.path.join(workdir, 'checkpoints', str(step)))
  task, config = toy(*OVERRIDES)
  with pytest.raises(checkpoint_lib.NoIntactCheckpointError) as e:
    learner.evaluate(task, config, workdir)
  message = str(e.value)
  assert '\n' not in message
  assert all(f'checkpoint {s}' in message for s in (1, 2, 3))


def test_a_model_that_does_not_fit_is_named_with_both_shapes(trained, tmp_path, toy):
  workdir = trained(tmp_path / 'run')
  task, config = toy(*OVERRIDES, 'model.hidden=16')
  with pytest.raises(checkpoint_lib.CheckpointMismatchError,
                     match=r'params/layer_norm/offset has shape \(32,\) in the checkpoint, '
                           r'\(16,\) in the configured model'):
    learner.evaluate(task, config, workdir)


def test_manifest_records_every_file(trained, tmp_path):
  workdir = trained(tmp_path / 'run')
  step_dir = os.path.join(workdir, 'checkpoints', '2')
  assert checkpoint_lib.verify_manifest(step_dir) == ''
  with open(os.path.join(step_dir, 'stray'), 'w') as f:  # Extra files do not matter.
    f.write('x')
  assert checkpoint_lib.verify_manifest(step_dir) == ''
  os.remove(os.path.join(step_dir, '_CHECKPOINT_METADATA'))
  assert 'missing' in checkpoint_lib.verify_manifest(step_dir)


def test_async_saves_get_manifests(tmp_path, toy):
  task, config = toy('train.steps=3', 'checkpoint.every=1', 'eval.every=0',
                     'checkpoint.async_save=true')
  learner.train(task, config, str(tmp_path))
  for step in (1, 2, 3):
    assert checkpoint_lib.verify_manifest(
        str(tmp_path / 'checkpoints' / str(step))) == ''


def test_train_with_every_checkpoint_damaged_fails_and_moves_nothing(trained, tmp_path,
                                                                      toy):
  workdir = trained(tmp_path / 'run')
  for step in (1, 2, 3):
    truncate(os.path.join(workdir, 'checkpoints', str(step)))
  task, config = toy('train.steps=4', 'checkpoint.every=1', 'eval.every=0')
  with pytest.raises(checkpoint_lib.NoIntactCheckpointError):
    learner.train(task, config, workdir)
  # A second attempt must not silently start from scratch.
  assert learner.Checkpointer(os.path.join(workdir, 'checkpoints')).all_steps() == [1, 2, 3]
  assert not os.path.exists(os.path.join(workdir, 'checkpoints.damaged'))
