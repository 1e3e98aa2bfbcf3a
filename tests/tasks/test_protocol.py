"""Every registered task follows tasks.base.TaskModule; its default config validates."""

import inspect

import ml_collections
import pytest

from perceiver_agents import cli
from perceiver_agents import tasks
from perceiver_agents.learner import config as learner_config
from perceiver_agents.tasks import base


@pytest.mark.parametrize('name', tasks.names())
def test_task_module_follows_the_protocol(name):
  module = tasks.get(name)
  assert isinstance(module, base.TaskModule), name
  assert (module.__doc__ or '').strip(), f'{name}: no module docstring (shown by `list`)'
  config = module.get_config()
  assert isinstance(config, ml_collections.ConfigDict)
  # The learner's sections, laid out as the learner defines them.
  defaults = learner_config.default_config()
  for section in ('train', 'eval', 'optimizer', 'mesh', 'checkpoint'):
    assert set(defaults[section]) <= set(config[section]), (name, section)
  assert 'model' in config or 'agent' in config, name  # RL tasks: the agent's network.
  assert list(inspect.signature(module.build).parameters)[0] == 'config'
  for protocol, attr in ((base.ModelBuilder, 'build_model'), (base.Predicting, 'predict'),
                         (base.Generating, 'generate')):
    if hasattr(module, attr):
      assert isinstance(module, protocol), (name, attr)
      assert list(inspect.signature(getattr(module, attr)).parameters)[0] in (
          'config', 'command'), (name, attr)


def test_task_commands_are_the_protocols_optional_members():
  assert set(cli.TASK_COMMANDS) == {'predict', 'generate'}


def test_register_refuses_a_second_module_under_one_name():
  with pytest.raises(ValueError, match="'digits' is already registered"):
    tasks.register('digits', 'somewhere.else')


def test_toy_is_not_a_user_task():
  from perceiver_agents.tasks import _TASKS  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  fresh = importlib.reload(importlib.import_module('perceiver_agents.tasks'))
  try:
    assert 'toy' not in fresh.names()
  finally:
    fresh.register('toy', 'perceiver_agents.tasks.toy')
  del _TASKS
