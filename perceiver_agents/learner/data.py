"""What the loop trains on: a task's iterator of batches, put on the mesh one step ahead.

A task (tasks/base.py) either defines `train_iterator(start_step)`, an iterator of this
process's rows of the global batch of each step from `start_step` on, or only
`train_batch(step)`, the global batch of a step; `train_iterator` below adapts the latter
(each process keeps its own rows), so a resumed supervised run sees the same batches.

An iterator may also have (reinforcement learning, agents/impala/backends.py):
  publish(params, step)   called with the starting parameters and after every update,
                          before the batch of `step` is asked for;
  metrics() -> {name: float}   host-side scalars added to every training log line;
  get_state() / set_state(state)   a picklable state saved beside each checkpoint, for an
                          exact resume (get_state may return None: nothing to save);
  close()                 called when the run ends.

`DevicePrefetcher.fetch()` takes the next host batch and starts its copy to the devices;
the loop calls it right after dispatching an update (JAX dispatches asynchronously), so
the host work and the host-to-device copy of batch s + 1 overlap update s.
"""

import logging
import os
import pickle
from typing import Any, Iterator, Optional

import jax

from perceiver_agents.learner import sharding as sharding_lib

STATE_DIR = 'iterator_state'

log = logging.getLogger('perceiver_agents.learner')


def train_iterator(task: Any, start_step: int) -> Iterator[Any]:
  """The task's batches from `start_step` on (process-local rows, numpy)."""
  make = getattr(task, 'train_iterator', None)
  if make is not None:
    return make(start_step)
  return _from_train_batch(task.train_batch, start_step)


def _from_train_batch(train_batch, start_step: int):
  step = start_step
  while True:
    yield sharding_lib.local_rows(train_batch(step))
    step += 1


class DevicePrefetcher:
  """Puts the iterator's process-local batches on `mesh`, split over `data`."""

  def __init__(self, iterator: Iterator[Any], mesh: jax.sharding.Mesh):
    self._iterator = iterator
    self._mesh = mesh

  def fetch(self) -> Any:
    """The next batch as global arrays (the copy runs asynchronously)."""
    return sharding_lib.local_batch_to_device(next(self._iterator), self._mesh)


def _state_path(workdir: str, step: int) -> str:
  suffix = f'.{jax.process_index()}' if jax.process_count() > 1 else ''
  return os.path.join(workdir, STATE_DIR, f'{step}{suffix}.pkl')


def save_state(iterator: Any, workdir: str, step: int, keep_steps) -> None:
  """Writes the iterator's get_state() for checkpoint `step` (atomically), keeping only
  the files of `keep_steps` and `step`; a no-op for iterators without a state."""
  get_state = getattr(iterator, 'get_state', None)
  if get_state is None:
    return
  try:
    state = get_state()
    if state is None:
      return
    payload = pickle.dumps(state)
  except Exception as e:  # pylint: disable=broad-except
    log.warning('train iterator state not saved (%s: %s): a run resumed from step %d '
                'continues with fresh iterator state.', type(e).__name__, e, step)
    return
  path = _state_path(workdir, step)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'wb') as f:
    f.write(payload)
  os.replace(path + '.tmp', path)
  keep = {os.path.basename(_state_path(workdir, s)) for s in set(keep_steps) | {step}}
  for name in os.listdir(os.path.dirname(path)):
    if name.endswith('.pkl') and name not in keep and name.split('.')[0].isdigit():
      os.remove(os.path.join(os.path.dirname(path), name))


def restore_state(iterator: Any, workdir: str, step: Optional[int]) -> bool:
  """Gives the iterator the state saved with checkpoint `step`, if both exist."""
  set_state = getattr(iterator, 'set_state', None)
  if step is None or set_state is None:
    return False
  path = _state_path(workdir, step)
  if not os.path.exists(path):
    return False
  with open(path, 'rb') as f:
    set_state(pickle.load(f))
  return True
