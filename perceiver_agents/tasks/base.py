"""What a task is: a config, a model, a loss, metrics and data — all the learner sees.

A task lives in one module of perceiver_agents/tasks/ that defines

    get_config() -> ml_collections.ConfigDict   # learner.default_config() + model/data
    build(config) -> Task

and is registered by name in perceiver_agents/tasks/__init__.py.
"""

import dataclasses
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

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
