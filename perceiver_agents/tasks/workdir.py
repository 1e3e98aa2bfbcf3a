"""What task-specific commands (predict, generate) need from a training workdir.

    config = run_config(module, workdir, overrides)   # the run's config, as trained
    params, state = restore(model, config, workdir, sample_batch)   # latest checkpoint
    config, params, state = load_for_predict(module, task, path, overrides, ...)
        # a workdir as above, or a weights file (pretrained.load_checked)

No data set is needed: the train state's layout comes from the model and a sample batch.
"""

import json
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import haiku as hk
import jax
import ml_collections

from perceiver_agents.learner import checkpoint as checkpoint_lib
from perceiver_agents.learner import optim
from perceiver_agents.learner import sharding as sharding_lib
from perceiver_agents.learner import update as update_lib
from perceiver_agents.learner.config import apply_overrides
from perceiver_agents.learner.loop import CHECKPOINT_DIR
from perceiver_agents.tasks import pretrained

RUN_FILE = 'run.json'  # Written by `perceiver-agents train` (cli.RUN_FILE).


def is_workdir(path: str) -> bool:
  return os.path.isdir(os.path.join(path, CHECKPOINT_DIR))


def run_config(module: Any, workdir: str, overrides: Sequence[str] = (), *,
               task: Optional[str] = None) -> ml_collections.ConfigDict:
  """module.get_config() with the run's recorded overrides, then `overrides` on top.

  With `task`, a workdir whose run.json records another task is refused.
  """
  run = {}
  run_file = os.path.join(workdir, RUN_FILE)
  if os.path.exists(run_file):
    with open(run_file) as f:
      run = json.load(f)
  if task is not None and run.get('task', task) != task:
    raise ValueError(f'{workdir}: holds a run of {run["task"]!r}, not {task}.')
  return apply_overrides(module.get_config(),
                         list(run.get('overrides', [])) + list(overrides))


def restore(model: hk.TransformedWithState, config: ml_collections.ConfigDict,
            workdir: str, sample_batch: Mapping[str, Any]) -> tuple[Any, Any]:
  """(params, state) of the latest checkpoint in `workdir`, on the default device."""
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
    step = checkpoints.latest_step()
    if step is None:
      raise ValueError(f'--checkpoint: no checkpoint in {checkpoints.directory}.')
    try:
      ts = checkpoints.restore(checkpoint_lib.abstract_target(shapes, shardings), step=step)
    except ValueError as e:  # orbax: the saved tree differs from the configured model's.
      first = str(e).strip().splitlines()[0][:200]
      raise ValueError(f'{checkpoints.directory}: checkpoint {step} does not fit the '
                       f"configured model (pass the run's --config overrides): {first}"
                       ) from None
  finally:
    checkpoints.close()
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
  if os.path.isdir(checkpoint):
    config = run_config(module, checkpoint, overrides, task=task)
    config.model.init_checkpoint = ''
    params, state = restore(module.build_model(config), config, checkpoint,
                            sample_batch(config))
    return config, params, state
  config = apply_overrides(module.get_config(), list(overrides))
  config.model.init_checkpoint = ''
  params, state = pretrained.load_checked(checkpoint, module.build_model(config))
  return config, params, state
