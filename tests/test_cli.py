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
