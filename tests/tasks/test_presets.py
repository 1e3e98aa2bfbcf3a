"""Every task's `--config.preset=local` variant: declared, valid, small; one override rule."""

import jax
import numpy as np
import pytest

from perceiver_agents import tasks
from perceiver_agents.tasks import base

# Tasks that build without a data set: their local model is built and counted.
DATA_FREE = ('copy', 'digits', 'optical_flow', 'toy')
MAX_LOCAL_PARAMS = 100_000


def _num_params(name, overrides):
  module = tasks.get(name)
  config = base.make_config(module, overrides)
  task = module.build(config)
  params, _ = jax.eval_shape(
      lambda b: task.model.init(jax.random.PRNGKey(0), b, is_training=True),
      task.train_batch(0))
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize('name', tasks.names())
def test_every_task_declares_a_valid_short_local_preset(name):
  module = tasks.get(name)
  assert base.LOCAL in module.PRESETS, name
  config = base.make_config(module, ['preset=local'])  # Every field exists and parses.
  assert config.preset == 'local'
  default = module.get_config()
  assert config.train.steps <= 300 and config.train.steps < default.train.steps, name
  assert config.checkpoint.every == 0 and config.eval.every == 0, name  # Only at the end.
  assert not any(o.startswith('preset=') for o in module.PRESETS['local']), name


@pytest.mark.parametrize('name', DATA_FREE)
def test_local_models_are_small(name):
  local = _num_params(name, ['preset=local'])
  assert local <= MAX_LOCAL_PARAMS, (name, local)
  assert local < _num_params(name, []) or name == 'toy', name


def test_overrides_beat_the_preset_whatever_their_order():
  digits = tasks.get('digits')
  local = dict(o.split('=') for o in digits.PRESETS['local'])
  config = base.make_config(digits, ['train.steps=7', 'preset=local'])
  assert config.train.steps == 7
  assert config.model.num_latents == int(local['model.num_latents'])
  config = base.make_config(digits, ['preset=local', 'model.num_latents=24'])
  assert config.model.num_latents == 24
  assert config.model.num_latent_channels == int(local['model.num_latent_channels'])
  assert base.make_config(digits, ['preset=local', 'preset=']).model.num_latents == (
      digits.get_config().model.num_latents)
  assert base.preset_of(['preset=local', 'a=1', 'preset=big']) == 'big'


def test_an_unknown_preset_is_named():
  with pytest.raises(ValueError, match=r"--config.preset: unknown preset 'tiny'; this task "
                                       r"has \['local'\]"):
    base.make_config(tasks.get('digits'), ['preset=tiny'])
