"""What a task is: a config, a model, a loss, metrics and data — all the learner sees.

A task lives in one module of perceiver_agents/tasks/ that defines

    get_config() -> ml_collections.ConfigDict   # learner.default_config() + model/data
    build(config) -> Task

and is registered by name in perceiver_agents/tasks/__init__.py.
"""

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Optional

import haiku as hk
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
    acting_batch: optional, for reinforcement learning: `(step, params) -> Batch`, data
      that depends on the current parameters (trajectories an actor collected with them).
      When set, the loop trains on it instead of `train_batch`, which then only gives the
      batch layout (shapes and dtypes) at step 0.
  """

  model: hk.TransformedWithState
  loss: Callable[[Any, Batch], Any]
  metrics: Callable[[Any, Batch], Mapping[str, Any]]
  train_batch: Callable[[int], Batch]
  eval_batches: Callable[[int], Iterable[Batch]]
  acting_batch: Optional[Callable[[int, Any], Batch]] = None
