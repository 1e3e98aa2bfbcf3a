"""The one override rule and the run record."""

import json

import pytest

from perceiver_agents import tasks
from perceiver_agents.tasks import workdir


def test_merge_puts_new_values_on_top_in_first_set_order():
  assert workdir.merge_overrides(['a.x=1', 'b.y=2'], ['a.x=3', 'c.z=4']) == [
      'a.x=3', 'b.y=2', 'c.z=4']


def test_record_keeps_history_and_is_atomic(tmp_path):
  workdir.record_run(str(tmp_path), task='toy', command='train', new=['a=1'],
                     overrides=['a=1'])
  workdir.record_run(str(tmp_path), task='toy', command='train', new=['b=2'],
                     overrides=['a=1', 'b=2'])
  run = json.loads((tmp_path / 'run.json').read_text())
  assert run['overrides'] == ['a=1', 'b=2']
  assert [i['overrides'] for i in run['invocations']] == [['a=1'], ['b=2']]
  assert sorted(p.name for p in tmp_path.iterdir()) == ['run.json']  # No temp file left.


def test_run_overrides_refuse_another_task_and_changed_model_on_resume(tmp_path):
  workdir.record_run(str(tmp_path), task='toy', command='train',
                     new=['model.hidden=16'], overrides=['model.hidden=16'])
  with pytest.raises(ValueError, match="holds a run of 'toy', not 'digits'"):
    workdir.run_overrides(str(tmp_path), [], task='digits')
  with pytest.raises(ValueError, match='--config.model.hidden: .*model.hidden=16'):
    workdir.run_overrides(str(tmp_path), ['model.hidden=8'], task='toy', resuming=True)
  with pytest.raises(ValueError, match="model.dropout=the task's default"):
    workdir.run_overrides(str(tmp_path), ['model.dropout=0.5'], task='toy', resuming=True)
  # The same value, and non-model fields, are fine; eval may change anything.
  assert workdir.run_overrides(str(tmp_path), ['model.hidden=16', 'train.steps=9'],
                               task='toy', resuming=True) == [
                                   'model.hidden=16', 'train.steps=9']
  assert workdir.run_overrides(str(tmp_path), ['model.hidden=8'], task='toy') == [
      'model.hidden=8']
  config = workdir.run_config(tasks.get('toy'), str(tmp_path), ['train.steps=9'])
  assert config.model.hidden == 16 and config.train.steps == 9


def test_a_recorded_preset_is_reused_and_not_changed_on_resume(tmp_path):
  workdir.record_run(str(tmp_path), task='toy', command='train', new=['preset=local'],
                     overrides=['preset=local'])
  config = workdir.run_config(tasks.get('toy'), str(tmp_path), ['train.steps=9'])
  assert config.preset == 'local' and config.model.hidden == 8 and config.train.steps == 9
  with pytest.raises(ValueError, match='--config.preset: .*preset=local'):
    workdir.run_overrides(str(tmp_path), ['preset='], task='toy', resuming=True)
  assert workdir.run_overrides(str(tmp_path), ['preset=local'], task='toy',
                               resuming=True) == ['preset=local']
