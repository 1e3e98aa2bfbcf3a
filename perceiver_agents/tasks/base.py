"""What a task is: a config, a model, a loss, metrics and data — all the learner sees.

A task lives in one module of perceiver_agents/tasks/ that follows `TaskModule`:

    get_config() -> ml_collections.ConfigDict   # learner.default_config() + model/data
    PRESETS = {'local': ('model.x=...', ...)}      # named variants, as config overrides
    build(config) -> Task
    build_model(config) -> hk.TransformedWithState   # optional: the model, without data
    predict(command) -> int, generate(command) -> int  # optional: `perceiver-agents predict`

and is registered by name in perceiver_agents/tasks/__init__.py (a test checks every
registered task against the protocol).

Every run's config comes from `make_config(module, overrides)`: `get_config()`, then the
overrides of the preset that `preset=NAME` selects, then `overrides` themselves, so any
`--config.*` beats the preset. Each task declares `PRESETS['local']`: a small variant
that trains end to end in under a minute on 2 CPU cores (big_vision's `runlocal`),

    perceiver-agents train digits --workdir /tmp/d --config.preset=local

and `preset=local`, an override like any other, is recorded in the run (tasks/workdir.py)
so that resuming, `eval` and `predict` rebuild the same config.
"""

import dataclasses
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Protocol, Sequence
from typing import runtime_checkable

import haiku as hk
import ml_collections
import numpy as np

Batch = Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Task:
  """The parts of a supervised task the learner uses.

  Attributes:
    model: `apply(params, state, rng, batch, is_training=...) -> outputs`.
    loss: `(outputs, batch) -> [B]` per-example losses to minimise (mean over B).
    metrics: `(outputs, batch) -> {name: [B]}` per-example values, averaged by the learner
      over training batches and over the whole eval set.
    train_batch: `step -> Batch` of the global batch size; a pure function of the config's
      seed and `step` (this is what lets a resumed run continue bit-identically).
    eval_batches: `batch_size -> Iterable[Batch]`, the eval set in batches of at most
      batch_size examples.
    train_iterator: optional, `start_step -> Iterator[Batch]` of this process's rows of
      the global batch of every step from start_step on. Without it the learner iterates
      over `train_batch` (learner/data.py). An RL task sets it to its actors' trajectories
      (agents/impala/); `train_batch` then only gives the batch layout (shapes and
      dtypes) at step 0.
  """

  model: hk.TransformedWithState
  loss: Callable[[Any, Batch], Any]
  metrics: Callable[[Any, Batch], Mapping[str, Any]]
  train_batch: Callable[[int], Batch]
  eval_batches: Callable[[int], Iterable[Batch]]
  train_iterator: Optional[Callable[[int], Iterator[Batch]]] = None


@runtime_checkable
class TaskModule(Protocol):
  """What every registered task module provides (checked for each by a test).

  PRESETS: {name: overrides ('FIELD=VALUE' strings)} applied by `make_config` when the
  run sets `preset=name`; every task has 'local' (see the module docstring).
  """

  PRESETS: Mapping[str, Sequence[str]]

  def get_config(self) -> ml_collections.ConfigDict:
    """The task's defaults: learner.default_config() plus `model` and `data` sections."""

  def build(self, config: ml_collections.ConfigDict) -> Task:
    """The model, loss, metrics and data of `config` (ValueError naming a bad field)."""


@runtime_checkable
class ModelBuilder(Protocol):
  """Tasks whose model can be built without their data (restoring for predict)."""

  def build_model(self, config: ml_collections.ConfigDict) -> hk.TransformedWithState:
    ...


LOCAL = 'local'  # The preset every task declares.


def preset_of(overrides: Sequence[str]) -> str:
  """The preset that `overrides` select ('' for none): the last `preset=NAME`."""
  name = ''
  for item in overrides:
    path, _, value = item.partition('=')
    if path == 'preset':
      name = value
  return name


def make_config(module: Any, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """module.get_config(), the selected preset's overrides, then `overrides` on top.

  Raises:
    ValueError: naming --config.preset for a preset the task does not declare, or the
      field of a bad override (learner.config.apply_overrides).
  """
  # Imported here: `perceiver_agents.tasks` is imported by the CLI before it quiets the
  # libraries that the learner loads (startup.quiet_libraries).
  from perceiver_agents.learner.config import apply_overrides  # pylint: disable=g-import-not-at-top
  config = module.get_config()
  name = preset_of(overrides) or config.get('preset', '')
  if name:
    presets = getattr(module, 'PRESETS', {})
    if name not in presets:
      raise ValueError(f'--config.preset: unknown preset {name!r}; this task has '
                       f'{sorted(presets)}.')
    apply_overrides(config, list(presets[name]) + [f'preset={name}'])
  return apply_overrides(config, list(overrides))


@dataclasses.dataclass(frozen=True)
class CommandArgs:
  """A task command's arguments as the CLI parsed them (cli.py alone parses these).

  Attributes:
    checkpoint: `--checkpoint PATH` ('' if not given): a training workdir, a weights file
      or a transformers folder (tasks/workdir.py tells them apart).
    overrides: the `--config.FIELD=VALUE` overrides, as 'FIELD=VALUE' strings.
    args: everything else, for the task's own parser (inputs, --out, ...).
  """
  checkpoint: str = ''
  overrides: Sequence[str] = ()
  args: Sequence[str] = ()

  def require_checkpoint(self, what: str = 'a training workdir or a weights file') -> str:
    if not self.checkpoint:
      raise ValueError(f'--checkpoint: required ({what}).')
    return self.checkpoint

  def refuse_overrides(self, why: str) -> None:
    if self.overrides:
      raise ValueError(f'--config.{self.overrides[0].split("=", 1)[0]}: {why}.')


@runtime_checkable
class Predicting(Protocol):
  """Tasks with `perceiver-agents predict TASK ...`; returns an exit code."""

  def predict(self, command: CommandArgs) -> int:
    ...


@runtime_checkable
class Generating(Protocol):
  """Tasks with `perceiver-agents generate TASK ...`."""

  def generate(self, command: CommandArgs) -> int:
    ...
