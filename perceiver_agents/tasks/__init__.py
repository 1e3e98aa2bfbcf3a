"""Task registry: name -> module with get_config() and build(config) (see tasks/base.py)."""

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
    'toy': 'perceiver_agents.tasks.toy',
    'optical_flow': 'perceiver_agents.tasks.optical_flow',
    'imagenet': 'perceiver_agents.tasks.imagenet',
    'smax': 'perceiver_agents.tasks.smax',
}


def names() -> list[str]:
  return sorted(_TASKS)


def get(name: str) -> types.ModuleType:
  """The module of task `name` (imported on first use)."""
  if name not in _TASKS:
    close = difflib.get_close_matches(name, _TASKS, n=3)
    hint = f' Did you mean: {", ".join(close)}?' if close else ''
    raise ValueError(f'task: unknown task {name!r}; known tasks: {names()}.{hint}')
  return importlib.import_module(_TASKS[name])
