"""`perceiver-agents train|eval|predict smax`: the Anakin loop end to end on SMAX 3m."""

import json
import os

from perceiver_agents import cli

TINY = ['--config.preset=local', '--config.train.steps=1', '--config.train.progress_bar=false',
        '--config.eval.episodes=4']


def test_train_eval_and_render_smax(tmp_path, capfd):
  workdir = str(tmp_path / 'run')
  assert cli.main(['train', 'smax', '--workdir', workdir, '--config.env.map=3m',
                   '--config.agent.encoder=perceiver_io'] + TINY) == 0
  trained = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
  assert trained['step'] == 1 and trained['env_steps'] == 16
  assert trained['eval']['episodes'] == 4 and 0 <= trained['eval']['win_rate'] <= 1
  assert 1 <= trained['eval']['episode_length'] <= 100
  assert cli.main(['eval', 'smax', '--workdir', workdir]) == 0
  evaluated = json.loads(capfd.readouterr().out.strip().splitlines()[-1])['eval']
  assert evaluated == trained['eval']      # Same checkpoint, same evaluation keys.
  gif = str(tmp_path / 'battle.gif')
  assert cli.main(['predict', 'smax', '--checkpoint', workdir, '--out', gif]) == 0
  assert os.path.getsize(gif) > 1000


def test_unknown_map_is_a_clear_error(tmp_path, capfd):
  code = cli.main(['train', 'smax', '--workdir', str(tmp_path), '--config.env.map=4x'])
  assert code == 2
  err = capfd.readouterr().err
  assert "unknown SMAX map '4x'" in err and "'3m'" in err
