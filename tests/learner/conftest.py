"""Helpers for the learner tests: the toy task and a child-process runner."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from perceiver_agents import learner, tasks

CHILD = pathlib.Path(__file__).with_name('child.py')
REPO = pathlib.Path(__file__).resolve().parents[2]


def load_child():
  """child.py as a module, to run its functions in the test process too."""
  spec = importlib.util.spec_from_file_location('learner_child', CHILD)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def child_env(num_devices: int = 1) -> dict:
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')])
  flags = [f for f in env.get('XLA_FLAGS', '').split()
           if 'xla_force_host_platform_device_count' not in f]
  flags.append(f'--xla_force_host_platform_device_count={num_devices}')
  env['XLA_FLAGS'] = ' '.join(flags)
  env['JAX_PLATFORMS'] = 'cpu'
  return env


def start_child(spec: dict, num_devices: int = 1) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, str(CHILD), json.dumps(spec)],
                          env=child_env(num_devices), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def run_child(spec: dict, num_devices: int = 1, timeout: float = 120) -> str:
  proc = start_child(spec, num_devices)
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out
  return out


@pytest.fixture
def toy():
  """toy(*overrides) -> (task, config) of the toy task."""
  module = tasks.get('toy')
  def make(*overrides):
    config = learner.apply_overrides(module.get_config(), list(overrides))
    return module.build(config), config
  return make


@pytest.fixture
def child():
  """child.run(spec, num_devices) / child.start(...) run child.py in a fresh process;
  child.module is child.py imported here."""
  import types  # pylint: disable=g-import-not-at-top
  return types.SimpleNamespace(run=run_child, start=start_child, module=load_child())
