"""Learner work run in a fresh process by the tests (not a test itself).

A fresh process is what lets a test choose the device count (XLA_FLAGS must be set before
jax starts) and kill a run. Usage: python child.py '<json spec>', the spec holding
  mode: 'train' | 'one_update'
  overrides: ['a.b=value', ...] for the toy task's config
  workdir (train), out (one_update: .npz of the params after one update, a '%s'
    pattern filled with each of the spec's `fsdp` values)
  block_finalize_at: optional step whose checkpoint write blocks just before its atomic
    rename, after printing BLOCKED (so that a test can kill it mid-write).
"""

import json
import sys
import time

import jax
import numpy as np

from perceiver_agents import learner, tasks
from perceiver_agents.learner import sharding


def toy(overrides):
  tasks.register('toy', 'perceiver_agents.tasks.toy')
  module = tasks.get('toy')
  config = learner.apply_overrides(module.get_config(), overrides)
  return module.build(config), config


def flat(tree) -> dict:
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def one_update(task, config, mesh=None) -> dict:
  """Params after init + one update on the global batch of step 0, flattened."""
  programs = learner.build_programs(task, config, mesh)
  ts = learner.initial_state(task, config, programs)
  batch = sharding.global_batch_to_device(task.train_batch(0), programs.mesh)
  ts, _ = programs.update(ts, batch)
  return flat(ts.params)


def block_finalize_at(step: int) -> None:
  # Orbax renames the temporary directory in finalize(); stalling there freezes the save
  # with everything written but not yet committed.
  from orbax.checkpoint.path import atomicity  # pylint: disable=g-import-not-at-top
  original = atomicity.AtomicRenameTemporaryPath.finalize

  async def finalize(self):
    if self.get_final().name == str(step):
      print('BLOCKED', flush=True)
      time.sleep(3600)
    return await original(self)
  atomicity.AtomicRenameTemporaryPath.finalize = finalize


def main() -> None:
  spec = json.loads(sys.argv[1])
  task, config = toy(spec.get('overrides', []))
  if spec.get('block_finalize_at') is not None:
    block_finalize_at(spec['block_finalize_at'])
  if spec['mode'] == 'train':
    learner.train(task, config, spec['workdir'])
    if spec.get('out'):
      _, ts = learner.load_state(task, config, spec['workdir'])
      np.savez(spec['out'], **flat(ts.params))
  elif spec['mode'] == 'one_update':  # Once per mesh.fsdp value, into out % fsdp.
    for fsdp in spec.get('fsdp', [False]):
      config.mesh.fsdp = fsdp
      np.savez(spec['out'] % fsdp, **one_update(task, config))
  print('DEVICES', jax.device_count(), flush=True)


if __name__ == '__main__':
  main()
