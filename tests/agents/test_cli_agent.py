"""`perceiver-agents train agent ...` runs IMPALA through the learner and resumes."""

import json

from perceiver_agents import cli
from perceiver_agents.learner import read_metrics


def test_train_agent_on_entity_micro_and_resume(tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  args = ['train', 'agent', '--workdir', workdir, '--config.env=entity_micro',
          '--config.agent.encoder=mlp', '--config.preset=local',
          '--config.train.progress_bar=false']
  assert cli.main(args + ['--config.train.steps=2']) == 0
  assert cli.main(args + ['--config.train.steps=3']) == 0
  out = capsys.readouterr()
  assert 'Resumed from checkpoint at step 2' in out.out + out.err
  result = json.loads(out.out.strip().splitlines()[-1])
  assert result['step'] == 3
  train = [r for r in read_metrics(workdir) if r['split'] == 'train']
  assert {'pg_loss', 'baseline_loss', 'entropy', 'episode_return'} <= set(train[-1])


def test_bad_agent_config_is_a_clear_error(tmp_path, capsys):
  code = cli.main(['train', 'agent', '--workdir', str(tmp_path), '--config.env=chess'])
  assert code == 2
  assert "env: unknown environment 'chess'" in capsys.readouterr().err


def test_an_encoder_that_does_not_resolve_is_an_error_for_every_environment(tmp_path,
                                                                             capsys):
  # catch has no entities: the entity encoder is unused but still must name something.
  code = cli.main(['train', 'agent', '--workdir', str(tmp_path), '--config.env=catch',
                   '--config.agent.encoder=nosuch.module:Thing'])
  assert code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["perceiver-agents: error: agent.encoder: cannot import 'nosuch.module' "
                 "(No module named 'nosuch')."]
