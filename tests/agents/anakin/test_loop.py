"""The Anakin loop: resume is bit-identical, 1 and 8 devices agree, PPO and V-trace learn."""

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from perceiver_agents import learner
from perceiver_agents.agents import anakin
from perceiver_agents.agents.envs import jax_envs
from perceiver_agents.learner import checkpoint as checkpoint_lib

TINY = ['rl.num_envs=8', 'rl.unroll_length=8', 'rl.epochs=2', 'rl.num_minibatches=2',
        'agent.hidden_size=16', 'optimizer.name=adam', 'optimizer.schedule=constant',
        'optimizer.warmup_steps=0', 'train.progress_bar=false', 'train.log_every=1']


def tiny_config(*overrides):
  config = learner.default_config()
  config.agent = anakin.network_config()
  config.rl = anakin.loss_config()
  return learner.apply_overrides(config, TINY + list(overrides))


def _final_state(programs, workdir):
  checkpoints = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  try:
    return checkpoints.restore(checkpoint_lib.abstract_target(
        programs.shapes, programs.shardings))
  finally:
    checkpoints.close()


@pytest.mark.parametrize('loss', ['ppo', 'vtrace'])
def test_resumed_run_is_bit_identical(tmp_path, loss):
  env = jax_envs.make('gymnax:CartPole-v1')
  config = tiny_config('train.steps=4', 'checkpoint.every=2', f'rl.loss={loss}')
  programs = anakin.build(env, config)
  straight = anakin.train(env, config, str(tmp_path / 'a'), programs=programs)
  half = tiny_config('train.steps=2', 'checkpoint.every=2', f'rl.loss={loss}')
  anakin.train(env, half, str(tmp_path / 'b'), programs=programs)
  resumed = anakin.train(env, config, str(tmp_path / 'b'), programs=programs)
  assert straight.step == resumed.step == 4 and resumed.env_steps == 4 * 64
  a, b = _final_state(programs, str(tmp_path / 'a')), _final_state(programs, str(tmp_path / 'b'))
  chex.assert_trees_all_equal(a, b)   # params, optimizer, environments, episode sums
  assert np.isfinite(straight.metrics['loss']) and straight.metrics['episodes'] > 0
  records = learner.read_metrics(str(tmp_path / 'b'))
  assert [r['step'] for r in records] == [1, 2, 3, 4]


def test_configuration_errors_name_the_field():
  env = jax_envs.make('gymnax:CartPole-v1')
  with pytest.raises(ValueError, match='rl.loss'):
    anakin.build(env, tiny_config('rl.loss=a2c'))
  with pytest.raises(ValueError, match=r'rl.num_envs \(8\) must be a multiple of '
                                       r'rl.num_minibatches \(3\)'):
    anakin.build(env, tiny_config('rl.num_minibatches=3'))
  assert anakin.num_updates(tiny_config('rl.env_steps=130')) == 3   # ceil(130 / 64)
  mixture = jax_envs.make('smax:3m+2s3z+5m_vs_6m')
  with pytest.raises(ValueError, match=r'rl.num_envs \(8\) must be a multiple of the '
                                       r'number of maps of the mixture \(3: 3m\+2s3z'):
    anakin.build(mixture, tiny_config())


_CHILD = r'''
import json, sys
import jax, numpy as np
from perceiver_agents.learner import sharding
from perceiver_agents.agents import anakin
from perceiver_agents.agents.envs import jax_envs
sys.path.insert(0, sys.argv[1])
from test_loop import tiny_config
env = jax_envs.make('gymnax:CartPole-v1')
config = tiny_config('train.steps=2', 'rl.unroll_length=4', 'rl.epochs=1')
out = {}
for n in (1, 8):
  programs = anakin.build(env, config, sharding.make_mesh(jax.devices()[:n]))
  ts = programs.init(jax.random.PRNGKey(0))
  for _ in range(2):
    ts, scalars = programs.update(ts)
  leaves = jax.tree.leaves(jax.device_get((ts.params, ts.state)))
  out[n] = [np.asarray(x, np.float64).tolist() for x in leaves]
  out[f'shards{n}'] = len(ts.state.obs['scalars'].addressable_shards)
print('RESULT', json.dumps({'devices': jax.device_count(), **{str(k): v for k, v in out.items()}}))
'''


def test_one_and_eight_devices_compute_the_same_update(tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', _CHILD, os.path.dirname(__file__)],
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT')][-1]
  result = json.loads(line[len('RESULT '):])
  assert result['devices'] == 8 and result['shards8'] == 8 and result['shards1'] == 1
  for one, eight in zip(result['1'], result['8']):
    np.testing.assert_allclose(eight, one, rtol=1e-4, atol=1e-5)


def test_seeds_side_by_side_equal_separate_runs_and_resume(tmp_path):
  env = jax_envs.make('gymnax:CartPole-v1')
  small = ('rl.unroll_length=4', 'rl.epochs=1', 'checkpoint.every=2')
  config = tiny_config('rl.num_seeds=2', 'seed=3', 'train.steps=3', *small)
  programs = anakin.build(env, config)
  half = tiny_config('rl.num_seeds=2', 'seed=3', 'train.steps=2', *small)
  anakin.train(env, half, str(tmp_path), programs=programs)
  resumed = anakin.train(env, config, str(tmp_path), programs=programs)
  assert resumed.step == 3 and resumed.env_steps == 3 * 32
  for i in range(2):
    assert f'episode_return/seed{i}' in resumed.metrics
  assert resumed.metrics['loss'] == pytest.approx(
      np.mean([resumed.metrics['loss/seed0'], resumed.metrics['loss/seed1']]))
  both = _final_state(programs, str(tmp_path))
  assert both.step.tolist() == [3, 3]

  single = anakin.build(env, tiny_config('train.steps=3', *small))
  for i, seed in enumerate((3, 4)):
    ts = single.init(jax.random.PRNGKey(seed))
    for _ in range(3):
      ts, _ = single.update(ts)
    chex.assert_trees_all_close(jax.device_get(anakin.seed_slice(both, i, 2)),
                                jax.device_get(ts), rtol=1e-5, atol=1e-6)
