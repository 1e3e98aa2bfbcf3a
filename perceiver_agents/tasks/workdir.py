"""A training workdir: its run record (run.json), the one override rule, and restoring.

    overrides = run_overrides(workdir, new)  # recorded overrides, then `new` on top
    record_run(workdir, task=..., command='train', new=..., overrides=...)  # atomic

    config = run_config(module, workdir, overrides)   # recorded overrides, then these
    params, state = restore(model, config, workdir, sample_batch)   # newest intact one
    config, params, state = load_for_predict(module, task, path, overrides, ...)
        # a workdir as above, or a weights file (pretrained.load_checked)

No data set is needed: the train state's layout comes from the model and a sample batch.
"""

import json
import os
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import haiku as hk
import jax
import ml_collections

from perceiver_agents.learner import checkpoint as checkpoint_lib
from perceiver_agents.learner import optim
from perceiver_agents.learner import sharding as sharding_lib
from perceiver_agents.learner import update as update_lib
from perceiver_agents.learner.loop import CHECKPOINT_DIR, warn
from perceiver_agents.tasks import base
from perceiver_agents.tasks import pretrained

RUN_FILE = 'run.json'  # The run record: see read_run / record_run.


def is_workdir(path: str) -> bool:
  return os.path.isdir(os.path.join(path, CHECKPOINT_DIR))


def read_run(workdir: str) -> dict:
  """The run record of `workdir` ({} if it has none).

  {'task': name, 'overrides': [...], 'invocations': [{'command', 'overrides', 'time'}]}:
  `overrides` are the ones in force (every invocation's, later ones on top).
  """
  path = os.path.join(workdir, RUN_FILE)
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      run = json.load(f)
    if not isinstance(run, dict) or not isinstance(run.get('overrides', []), list):
      raise ValueError('not a run record')
  except (OSError, ValueError) as e:
    raise ValueError(f'workdir: {path} is not a readable run record ({e}); restore it '
                     f'or remove it to start the record anew.') from None
  return run


def _path(override: str) -> str:
  return override.split('=', 1)[0]


def merge_overrides(recorded: Sequence[str], new: Sequence[str]) -> list[str]:
  """`recorded`, then `new` on top: one entry per field, the newest value, in the order
  the fields were first set."""
  merged = {}
  for item in list(recorded) + list(new):
    merged[_path(item)] = item
  return list(merged.values())


def run_overrides(workdir: str, new: Sequence[str] = (), *,
                  task: Optional[str] = None, resuming: bool = False) -> list[str]:
  """The one override rule: the run's recorded overrides, then `new` on top.

  Args:
    task: refuse a workdir whose record names another task.
    resuming: `train` continuing from checkpoints; a new value for a `model.*` field or
      for `preset` is refused (the checkpoint would not fit the changed model).
  """
  run = read_run(workdir)
  if task is not None and run.get('task', task) != task:
    raise ValueError(f'task: {workdir} holds a run of {run["task"]!r}, not {task!r}.')
  recorded = list(run.get('overrides', []))
  if resuming:
    before = dict((_path(o), o) for o in recorded)
    for item in new:
      path = _path(item)
      if (path.startswith('model.') or path == 'preset') and before.get(path) != item:
        was = before[path].split('=', 1)[1] if path in before else "the task's default"
        raise ValueError(
            f'--config.{path}: {workdir} holds checkpoints of a model trained with '
            f'{path}={was}; a changed model would not fit them. Resume without it, or '
            f'train a new run in another --workdir.')
  return merge_overrides(recorded, new)


def run_config(module: Any, workdir: str, overrides: Sequence[str] = (), *,
               task: Optional[str] = None) -> ml_collections.ConfigDict:
  """base.make_config(module, ...) of the run's recorded overrides, then `overrides` on top.

  With `task`, a workdir whose run.json records another task is refused.
  """
  return base.make_config(module, run_overrides(workdir, overrides, task=task))


def record_run(workdir: str, *, task: str, command: str, new: Sequence[str],
               overrides: Sequence[str]) -> None:
  """Appends this invocation to the run record and sets the overrides in force.

  Written atomically (temporary file, then rename): a crash leaves the old record.
  """
  run = read_run(workdir)
  history = list(run.get('invocations', []))
  history.append({'command': command, 'overrides': list(new),
                  'time': time.strftime('%Y-%m-%dT%H:%M:%S%z')})
  record = {'task': task, 'overrides': list(overrides), 'invocations': history}
  os.makedirs(workdir, exist_ok=True)
  tmp = os.path.join(workdir, f'.{RUN_FILE}.{os.getpid()}.tmp')
  with open(tmp, 'w') as f:
    json.dump(record, f, indent=2)
  os.replace(tmp, os.path.join(workdir, RUN_FILE))


def explain_mismatch(error: checkpoint_lib.CheckpointMismatchError, workdir: str,
                     new: Sequence[str] = ()) -> ValueError:
  """`error` with the run's recorded overrides and this command's new ones."""
  recorded = read_run(workdir).get('overrides', [])
  return ValueError(f'{error} The run was trained with overrides {recorded}; this '
                    f'command adds {list(new)}. Model fields must match the run.')


def restore(model: hk.TransformedWithState, config: ml_collections.ConfigDict,
            workdir: str, sample_batch: Mapping[str, Any], *,
            overrides: Sequence[str] = ()) -> tuple[Any, Any]:
  """(params, state) of the newest intact checkpoint in `workdir`, on the default device.

  Damaged checkpoints are skipped (one warning each); the step used is reported on
  stderr. `overrides` (this command's) only serve the message of a model mismatch.
  """
  if not is_workdir(workdir):
    raise ValueError(f'--checkpoint: {workdir} has no {CHECKPOINT_DIR}/ folder; '
                     f'train first or pass a params file.')
  optimizer, _ = optim.make_optimizer(config, total_steps=config.train.steps)
  init = update_lib.make_init_fn(model, optimizer)
  shapes = jax.eval_shape(init, jax.random.PRNGKey(0), sample_batch)
  rep = sharding_lib.replicated(sharding_lib.make_mesh(jax.devices()[:1]))
  shardings = jax.tree.map(lambda _: rep, shapes)
  checkpoints = checkpoint_lib.Checkpointer(os.path.join(workdir, CHECKPOINT_DIR))
  try:
    if checkpoints.latest_step() is None:
      raise ValueError(f'--checkpoint: no checkpoint in {checkpoints.directory}.')
    try:
      step, ts = checkpoints.restore_latest(
          checkpoint_lib.abstract_target(shapes, shardings), warn=warn)
    except checkpoint_lib.CheckpointMismatchError as e:
      raise explain_mismatch(e, workdir, overrides) from None
  finally:
    checkpoints.close()
  print(f'perceiver-agents: using checkpoint {step} of {checkpoints.directory}',
        file=sys.stderr)
  return ts.params, ts.state


def load_for_predict(module: Any, task: str, checkpoint: str, overrides: Sequence[str],
                     sample_batch: Callable[[ml_collections.ConfigDict], Mapping[str, Any]]
                     ) -> tuple[ml_collections.ConfigDict, Any, Any]:
  """(config, params, state) for `predict` from a workdir of `train TASK` or a weights file.

  A workdir (a folder) is restored with its run's config and `overrides` on top;
  `sample_batch(config)` gives a batch of the right shapes (zeros do: restoring needs no
  data set). Anything else is a weights file for module.build_model(config) after
  `overrides`, checked by pretrained.load_checked. The model's init_checkpoint is off.
  """
  if os.path.isdir(checkpoint) and not pretrained.is_transformers_dir(checkpoint):
    config = run_config(module, checkpoint, overrides, task=task)
    config.model.init_checkpoint = ''
    params, state = restore(module.build_model(config), config, checkpoint,
                            sample_batch(config), overrides=overrides)
    return config, params, state
  config = base.make_config(module, list(overrides))
  config.model.init_checkpoint = ''
  params, state = pretrained.load_checked(checkpoint, module.build_model(config))
  return config, params, state
