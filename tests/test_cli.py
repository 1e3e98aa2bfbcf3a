"""`perceiver-agents train|eval|list`."""

import json

import pytest

from perceiver_agents import cli


@pytest.mark.parametrize('override, field', [
    ('--config.optimizer.lr=0.1', 'optimizer.lr'),
    ('--config.train.steps=ten', 'train.steps'),
    ('--config.mesh.fsdp=sometimes', 'mesh.fsdp'),
])
def test_bad_override_fails_naming_it(tmp_path, capsys, override, field):
  assert cli.main(['train', 'toy', '--workdir', str(tmp_path), override]) == 2
  err = capsys.readouterr().err
  assert field in err
  assert not (tmp_path / 'checkpoints').exists()  # Failed before any work.


def test_unknown_task_and_argument(tmp_path, capsys):
  assert cli.main(['train', 'tyo', '--workdir', str(tmp_path)]) == 2
  assert "unknown task 'tyo'" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(['train', 'toy', '--workdir', str(tmp_path), '--steps=3'])


def test_list_shows_tasks_and_configs(capsys):
  assert cli.main(['list']) == 0
  out = capsys.readouterr().out
  assert 'toy:' in out and 'digits:' in out and 'learning_rate' in out


def test_train_then_eval(tmp_path, capsys):
  workdir = str(tmp_path)
  assert cli.main(['train', 'toy', '--workdir', workdir, '--config.train.steps=10',
                   '--config.eval.every', '0']) == 0
  trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert trained['step'] == 10
  assert json.loads((tmp_path / 'run.json').read_text())['overrides'] == [
      'train.steps=10', 'eval.every=0']
  assert cli.main(['eval', 'toy', '--workdir', workdir]) == 0
  evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert evaluated == trained


def _last_json(out: str) -> dict:
  return json.loads(out.strip().splitlines()[-1])


def test_eval_applies_new_overrides_on_top_of_the_recorded_ones(tmp_path, capsys):
  workdir = str(tmp_path)
  assert cli.main(['train', 'toy', '--workdir', workdir, '--config.train.steps=4',
                   '--config.eval.every=0', '--config.model.hidden=16']) == 0
  trained = _last_json(capsys.readouterr().out)
  # A new eval field must not drop the recorded model.hidden=16 (the checkpoint's size).
  assert cli.main(['eval', 'toy', '--workdir', workdir, '--config.eval.batch_size=8']) == 0
  captured = capsys.readouterr()
  assert _last_json(captured.out) == trained
  assert 'evaluated checkpoint 4' in captured.err


def test_eval_with_a_model_that_does_not_fit_names_path_shapes_and_overrides(tmp_path,
                                                                              capsys):
  workdir = str(tmp_path)
  assert cli.main(['train', 'toy', '--workdir', workdir, '--config.train.steps=2',
                   '--config.eval.every=0', '--config.model.hidden=16']) == 0
  capsys.readouterr()
  assert cli.main(['eval', 'toy', '--workdir', workdir, '--config.model.hidden=8']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  assert 'has shape (16,) in the checkpoint, (8,) in the configured model' in err[0]
  assert "'model.hidden=16'" in err[0] and "'model.hidden=8'" in err[0]


def test_resume_keeps_the_run_record_and_refuses_a_changed_model(tmp_path, capsys):
  workdir = str(tmp_path)
  assert cli.main(['train', 'toy', '--workdir', workdir, '--config.train.steps=2',
                   '--config.eval.every=0', '--config.model.hidden=16']) == 0
  before = (tmp_path / 'run.json').read_text()
  assert cli.main(['train', 'toy', '--workdir', workdir, '--config.model.hidden=8']) == 2
  assert 'model.hidden' in capsys.readouterr().err
  assert (tmp_path / 'run.json').read_text() == before  # Refused runs record nothing.
  # Resuming with only a longer schedule keeps model.hidden=16 and records both calls.
  assert cli.main(['train', 'toy', '--workdir', workdir, '--config.train.steps=3']) == 0
  run = json.loads((tmp_path / 'run.json').read_text())
  assert run['overrides'] == ['train.steps=3', 'eval.every=0', 'model.hidden=16']
  assert [i['overrides'] for i in run['invocations']] == [
      ['train.steps=2', 'eval.every=0', 'model.hidden=16'], ['train.steps=3']]
  assert cli.main(['eval', 'toy', '--workdir', workdir]) == 0
  assert _last_json(capsys.readouterr().out)['step'] == 3


def test_invalid_runs_write_no_run_record(tmp_path, capsys):
  assert cli.main(['train', 'toy', '--workdir', str(tmp_path / 'a'),
                   '--config.train.steps=-5']) == 2
  assert 'train.steps' in capsys.readouterr().err
  assert not (tmp_path / 'a').exists()


def test_damaged_latest_checkpoint_eval_uses_the_previous_one(tmp_path, capsys):
  import os  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path)
  assert cli.main(['train', 'toy', '--workdir', workdir, '--config.train.steps=2',
                   '--config.eval.every=0', '--config.checkpoint.every=1']) == 0
  capsys.readouterr()
  os.remove(os.path.join(workdir, 'checkpoints', '2', 'default', '_METADATA'))
  assert cli.main(['eval', 'toy', '--workdir', workdir]) == 0
  captured = capsys.readouterr()
  assert _last_json(captured.out)['step'] == 1
  warnings = [l for l in captured.err.splitlines() if l.strip()]
  assert len(warnings) == 2, warnings  # The skipped step, and the step evaluated.
  assert 'checkpoint 2' in warnings[0] and '_METADATA' in warnings[0]


def test_a_corrupt_run_record_is_one_clear_error(tmp_path, capsys):
  (tmp_path / 'run.json').write_text('{"task": "toy", "overr')
  assert cli.main(['eval', 'toy', '--workdir', str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'run.json' in err[0]


def test_task_commands_share_one_parser_for_checkpoint_and_overrides():
  parsed = cli.parse_task_command(
      ['a.png', '--checkpoint', 'runs/x', '--config.model.size=published', '--out',
       'o.png', '--config.data.pad_short', 'true', 'b.png'])
  assert parsed.checkpoint == 'runs/x'
  assert list(parsed.overrides) == ['model.size=published', 'data.pad_short=true']
  assert list(parsed.args) == ['a.png', '--out', 'o.png', 'b.png']
  assert cli.parse_task_command(['--workdir=runs/g']).checkpoint == 'runs/g'
  with pytest.raises(ValueError, match='--config.model.size: expected a value'):
    cli.parse_task_command(['--config.model.size'])


def test_task_command_errors_are_one_line(capsys):
  assert cli.main(['generate', 'byte_lm', '--prompt', 'x']) == 2
  assert capsys.readouterr().err.strip() == (
      'perceiver-agents: error: --checkpoint: required (workdir of a byte_lm train run).')
  assert cli.main(['predict', 'optical_flow', '--checkpoint', 'x', 'a.png']) == 2
  assert 'frame2' in capsys.readouterr().err  # The task's own parser.


def test_local_preset_is_recorded_and_rebuilt_by_eval(tmp_path, capsys):
  workdir = str(tmp_path)
  assert cli.main(['train', 'toy', '--workdir', workdir, '--config.preset=local',
                   '--config.train.steps=2']) == 0
  run = json.loads((tmp_path / 'run.json').read_text())
  assert run['overrides'] == ['preset=local', 'train.steps=2']
  config = json.loads((tmp_path / 'config.json').read_text())
  assert config['preset'] == 'local' and config['model']['hidden'] == 8
  capsys.readouterr()
  # The checkpoint's model is the preset's (hidden 8, not the default 32): eval must
  # rebuild it from the record.
  assert cli.main(['eval', 'toy', '--workdir', workdir]) == 0
  assert 'evaluated checkpoint 2' in capsys.readouterr().err
  assert cli.main(['train', 'toy', '--workdir', workdir, '--config.preset=']) == 2
  assert '--config.preset' in capsys.readouterr().err
