"""Task registry: name -> module following tasks.base.TaskModule.

`register(name, module_path)` adds a task of your own (tests register the `toy` task,
perceiver_agents.tasks.toy, which is not listed for users)."""

import difflib
import importlib
import types

from perceiver_agents.tasks.base import Task

_TASKS = {
    'agent': 'perceiver_agents.tasks.agent',
    'audioset': 'perceiver_agents.tasks.audioset',
    'byte_lm': 'perceiver_agents.tasks.byte_lm',
    'copy': 'perceiver_agents.tasks.copy',
    'digits': 'perceiver_agents.tasks.digits',
    'kinetics_autoencoding': 'perceiver_agents.tasks.kinetics_autoencoding',
    'glue': 'perceiver_agents.tasks.glue',
    'mlm': 'perceiver_agents.tasks.mlm',
    'optical_flow': 'perceiver_agents.tasks.optical_flow',
    'imagenet': 'perceiver_agents.tasks.imagenet',
    'smax': 'perceiver_agents.tasks.smax',
}


def register(name: str, module_path: str) -> None:
  """Makes the task module at `module_path` available as `name` (CLI included)."""
  if name in _TASKS and _TASKS[name] != module_path:
    raise ValueError(f'task: {name!r} is already registered as {_TASKS[name]!r}.')
  _TASKS[name] = module_path


def names() -> list[str]:
  return sorted(_TASKS)


def get(name: str) -> types.ModuleType:
  """The module of task `name` (imported on first use)."""
  if name not in _TASKS:
    close = difflib.get_close_matches(name, _TASKS, n=3)
    hint = f' Did you mean: {", ".join(close)}?' if close else ''
    raise ValueError(f'task: unknown task {name!r}; known tasks: {names()}.{hint}')
  return importlib.import_module(_TASKS[name])
