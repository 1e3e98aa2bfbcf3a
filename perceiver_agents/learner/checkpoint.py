"""Checkpoints of a TrainState with orbax: atomic, keep-last-N, restorable on any mesh.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
process killed mid-write leaves the previous checkpoints as they were and the partial one
invisible to `latest_step()`.
"""

import os
from typing import Optional

import jax
import orbax.checkpoint as ocp

from perceiver_agents.learner.state import TrainState


class Checkpointer:
  """Saves and restores TrainStates under `directory/<step>/`.

  Args:
    directory: where the step directories live (created if missing).
    keep: how many of the most recent checkpoints to keep (>= 1).
    async_save: write in a background thread after copying arrays to host.
  """

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = False):
    if keep < 1:
      raise ValueError(f'checkpoint.keep must be >= 1, got {keep}.')
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, state: TrainState, *, step: int) -> None:
    """Saves `state` as checkpoint `step` (replacing nothing: steps are unique)."""
    self._manager.save(step, args=ocp.args.StandardSave(state._asdict()), force=True)

  def restore(self, target: TrainState, *, step: Optional[int] = None) -> TrainState:
    """Restores checkpoint `step` (default: latest) laid out like `target`.

    Args:
      target: TrainState of `jax.ShapeDtypeStruct`s carrying the wanted shardings — those
        of the current mesh, which may have another device count than the saving run's.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise ValueError(f'directory: no checkpoint found in {self.directory}.')
    restored = self._manager.restore(
        step, args=ocp.args.StandardRestore(target._asdict()))
    return TrainState(**restored)

  def restore_as_saved(self, *, step: Optional[int] = None) -> dict:
    """Checkpoint `step` (default: latest) as it was saved: the TrainState's fields as a
    dict of host arrays, with no target (for reading params without building the model's
    optimizer state, e.g. predict from a workdir)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise ValueError(f'directory: no checkpoint found in {self.directory}.')
    return self._manager.restore(step, args=ocp.args.StandardRestore())

  def wait(self) -> None:
    """Blocks until an asynchronous save has finished."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_target(state_shapes: TrainState, shardings: TrainState) -> TrainState:
  """ShapeDtypeStructs with shardings: what `Checkpointer.restore` needs as target."""
  return jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      state_shapes, shardings)
