"""8 simulated CPU devices compute what 1 device computes; checkpoints move between them."""

import numpy as np

from perceiver_agents import learner
from perceiver_agents.learner import sharding

OVERRIDES = ['train.batch_size=32', 'eval.batch_size=64', 'optimizer.warmup_steps=0']


def _assert_close(expected: dict, actual, atol=1e-5):
  assert sorted(expected) == sorted(k for k in actual.files)
  for key, value in expected.items():
    np.testing.assert_allclose(actual[key], value, atol=atol, rtol=0, err_msg=key)


def test_one_update_on_eight_devices_equals_one_device(tmp_path, toy, child):
  task, config = toy(*OVERRIDES)
  one_device = sharding.make_mesh(sharding.make_mesh().devices.flat[:1])
  expected = child.module.one_update(task, config, one_device)
  out = str(tmp_path / 'fsdp_%s.npz')
  log = child.run({'mode': 'one_update', 'out': out, 'overrides': OVERRIDES,
                   'fsdp': [False, True]}, num_devices=8)
  assert 'DEVICES 8' in log
  for fsdp in (False, True):
    _assert_close(expected, np.load(out % fsdp))


def test_checkpoint_from_eight_devices_resumes_on_one(tmp_path, toy, child):
  overrides = OVERRIDES + ['train.steps=4', 'checkpoint.every=2', 'eval.every=0',
                           'mesh.fsdp=true']
  workdir, out = str(tmp_path / 'run'), tmp_path / 'params.npz'
  child.run({'mode': 'train', 'workdir': workdir, 'out': str(out),
             'overrides': overrides}, num_devices=8)
  task, config = toy(*overrides)
  programs = learner.build_programs(task, config, sharding.make_mesh(
      sharding.make_mesh().devices.flat[:1]))
  _, ts = learner.load_state(task, config, workdir, programs=programs)
  assert int(ts.step) == 4
  _assert_close(child.module.flat(ts.params), np.load(out), atol=0)

  task, config = toy(*overrides[:-3], 'train.steps=6', 'checkpoint.every=2',
                     'eval.every=0')
  result = learner.train(task, config, workdir)
  assert result.step == 6 and np.isfinite(result.eval_metrics['loss'])
