"""`perceiver-agents train|eval|predict smax`: the Anakin loop end to end on SMAX 3m.

One run goes through every command: `train` in a subprocess stopped by SIGTERM (it
checkpoints and exits 128 + 15), `train` again resuming it to the end, `eval` of that
checkpoint and `predict` rendering an episode.
"""

import json
import os
import signal
import subprocess
import sys
import time

from perceiver_agents import cli
from perceiver_agents.learner import metrics as metrics_lib

STEPS = 12
# The local preset, smaller still where compilation dominates, and 2 envs x 4 steps.
TINY = ['--config.preset=local', '--config.env.map=3m', '--config.agent.encoder=perceiver_io',
        '--config.agent.num_channels=8', '--config.agent.num_latents=2',
        '--config.agent.num_heads=2', '--config.agent.embedding_size=8',
        '--config.agent.entity_size=8', '--config.rl.num_envs=2',
        f'--config.train.steps={STEPS}', '--config.train.log_every=1',
        '--config.train.progress_bar=false', '--config.eval.episodes=2']

# `train smax` with each update slowed down, so that the signal lands mid-run.
_SLOW_TRAIN = r'''
import sys, time
from perceiver_agents import cli
from perceiver_agents.agents.anakin import loop
build = loop.build
def slow_build(*args, **kwargs):
  programs = build(*args, **kwargs)
  def update(ts):
    time.sleep(0.3)
    return programs.update(ts)
  return programs._replace(update=update)
loop.build = slow_build
sys.exit(cli.main(sys.argv[1:]))
'''


def _train_records(workdir):
  return [r for r in metrics_lib.read_metrics(workdir) if r['split'] == 'train']


def test_sigterm_checkpoints_then_resume_eval_and_render(tmp_path, capfd):
  workdir = str(tmp_path / 'run')
  proc = subprocess.Popen(
      [sys.executable, '-c', _SLOW_TRAIN, 'train', 'smax', '--workdir', workdir] + TINY,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while (proc.poll() is None and time.time() < deadline and
         len(_train_records(workdir)) < 2):
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
  stopped = json.loads(out.strip().splitlines()[-1])
  assert stopped['interrupted_by'] == signal.SIGTERM and 'eval' not in stopped
  assert 2 <= stopped['step'] < STEPS
  assert f'Stopped by signal {signal.SIGTERM} at step {stopped["step"]}' in out
  saved = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert str(stopped['step']) in saved

  assert cli.main(['train', 'smax', '--workdir', workdir]) == 0   # resumes to the end
  trained = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
  assert trained['step'] == STEPS and trained['env_steps'] == STEPS * 2 * 4
  assert [r['step'] for r in _train_records(workdir)] == list(range(1, STEPS + 1))
  assert trained['eval']['episodes'] == 2 and 0 <= trained['eval']['win_rate'] <= 1
  assert 1 <= trained['eval']['episode_length'] <= 100

  assert cli.main(['eval', 'smax', '--workdir', workdir]) == 0
  evaluated = json.loads(capfd.readouterr().out.strip().splitlines()[-1])['eval']
  assert evaluated == trained['eval']      # Same checkpoint, same evaluation keys.
  gif = str(tmp_path / 'battle.gif')   # The first 3 steps of an episode.
  assert cli.main(['predict', 'smax', '--checkpoint', workdir, '--out', gif,
                   '--config.eval.max_steps=3']) == 0
  assert os.path.getsize(gif) > 1000


def test_unknown_map_is_a_clear_error(tmp_path, capfd):
  code = cli.main(['train', 'smax', '--workdir', str(tmp_path), '--config.env.map=4x'])
  assert code == 2
  err = capfd.readouterr().err
  assert "unknown SMAX map '4x'" in err and "'3m'" in err

