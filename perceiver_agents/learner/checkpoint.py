"""Checkpoints of a TrainState with orbax: atomic, verified, keep-last-N, any mesh.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
process killed mid-write leaves the previous checkpoints as they were and the partial one
invisible to `latest_step()`. What orbax cannot see is damage after the fact (a truncated
or zeroed file, lost metadata, a half-deleted step): once a save has completed, a manifest
of every file's size and CRC-32 is written into the step's directory, and restoring checks
it first. `restore_latest` falls back step by step to the newest intact checkpoint,
warning once per damaged step and naming the file.
"""

import contextlib
import json
import logging
import os
import re
import shutil
import time
import warnings
import zlib
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp

from perceiver_agents.learner.state import TrainState

MANIFEST = 'perceiver_agents_manifest.json'


class CheckpointError(ValueError):
  """A checkpoint could not be restored (see the subclasses)."""


class DamagedCheckpointError(CheckpointError):
  """A checkpoint's files are missing, short, altered or unreadable."""


class CheckpointMismatchError(CheckpointError):
  """An intact checkpoint whose tree or shapes differ from the configured model's."""


class NoIntactCheckpointError(CheckpointError):
  """Checkpoints exist, but none of them could be restored."""


def _crc32(path: str) -> int:
  crc = 0
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 22):
      crc = zlib.crc32(chunk, crc)
  return crc


def _files(root: str) -> list[str]:
  """Every file under `root` (relative paths, sorted), the manifest excepted."""
  found = []
  for folder, _, names in os.walk(root):
    for name in names:
      rel = os.path.relpath(os.path.join(folder, name), root)
      if rel != MANIFEST:
        found.append(rel)
  return sorted(found)


def write_manifest(step_dir: str) -> None:
  """Records the size and CRC-32 of every file of a completed checkpoint (atomically)."""
  entries = {}
  for rel in _files(step_dir):
    path = os.path.join(step_dir, rel)
    entries[rel] = {'size': os.path.getsize(path), 'crc32': _crc32(path)}
  tmp = os.path.join(step_dir, MANIFEST + '.tmp')
  with open(tmp, 'w') as f:
    json.dump({'files': entries}, f, indent=1, sort_keys=True)
  os.replace(tmp, os.path.join(step_dir, MANIFEST))


def verify_manifest(step_dir: str) -> Optional[str]:
  """What is wrong with a checkpoint's files per its manifest ('' / None: nothing).

  Returns None for a checkpoint written without a manifest (nothing to check against).
  """
  path = os.path.join(step_dir, MANIFEST)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      entries = json.load(f)['files']
  except (OSError, ValueError, KeyError, TypeError) as e:
    return f'{path}: unreadable manifest ({type(e).__name__})'
  for rel, want in entries.items():
    file = os.path.join(step_dir, rel)
    if not os.path.exists(file):
      return f'{file}: missing'
    size = os.path.getsize(file)
    if size != want['size']:
      return f'{file}: {size} bytes, {want["size"]} when saved'
    if _crc32(file) != want['crc32']:
      return f'{file}: contents changed since saved (CRC-32 differs)'
  return ''


def _key_name(key: Any) -> Any:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return getattr(key, attr)
  return str(key)


def _shapes_by_path(tree: Any) -> dict:
  """{('params', 'linear', 'w'): shape} for every array leaf of a (metadata) tree."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {tuple(_key_name(k) for k in path): tuple(getattr(leaf, 'shape', ()))
          for path, leaf in leaves}


def _path_str(path: tuple) -> str:
  return '/'.join(str(p) for p in path)


def tree_difference(saved: Any, wanted: Any) -> Optional[str]:
  """The first parameter path where two trees of arrays differ in presence or shape."""
  saved, wanted = _shapes_by_path(saved), _shapes_by_path(wanted)
  order = {'params': 0, 'state': 1}  # A model's own arrays first, optimizer state last.
  for path in sorted(set(saved) | set(wanted),
                     key=lambda p: (order.get(p[0], 2) if p else 2, _path_str(p))):
    if path not in saved:
      return f'{_path_str(path)} {wanted[path]} is not in the checkpoint'
    if path not in wanted:
      return f'{_path_str(path)} {saved[path]} is in the checkpoint but not in the model'
    if saved[path] != wanted[path]:
      return (f'{_path_str(path)} has shape {saved[path]} in the checkpoint, '
              f'{wanted[path]} in the configured model')
  return None


_STATUS = re.compile(r'\b[A-Z][A-Z_]{3,}: .*(?:Error (?:reading|opening|writing)|file)')


def _first_line(error: BaseException) -> str:
  """The informative line of an orbax/TensorStore error: TensorStore's status line
  (which names the array and the file) from anywhere in the chain of causes."""
  chain, seen = [], error
  while seen is not None and len(chain) < 8:
    chain.append(seen)
    seen = seen.__cause__ or seen.__context__
  lines = [l.strip() for e in chain for l in str(e).splitlines() if l.strip()]
  status = next((l for l in lines if _STATUS.search(l)), None)
  line = status or (lines[0] if lines else type(error).__name__)
  return line[:500]


@contextlib.contextmanager
def _quiet_absl():
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


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
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler())
    self._unmanifested: list[int] = []

  def latest_step(self) -> Optional[int]:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, state: TrainState, *, step: int) -> None:
    """Saves `state` as checkpoint `step` (replacing nothing: steps are unique)."""
    self._finish_manifests()
    self._manager.save(step, args=ocp.args.StandardSave(state._asdict()), force=True)
    self._unmanifested.append(step)
    if not self._manager.is_saving_in_progress():
      self._finish_manifests()

  def _finish_manifests(self) -> None:
    """Writes the manifests of completed saves (process 0; the files are shared)."""
    if not self._unmanifested:
      return
    self._manager.wait_until_finished()
    if jax.process_index() == 0:
      for step in self._unmanifested:
        if os.path.isdir(self.step_dir(step)):  # Not already rotated away.
          write_manifest(self.step_dir(step))
    self._unmanifested.clear()

  def check(self, step: int, target: Optional[TrainState] = None) -> None:
    """Raises DamagedCheckpointError / CheckpointMismatchError if `step` cannot be
    restored into `target` (without reading the arrays themselves)."""
    problem = verify_manifest(self.step_dir(step))
    if problem:
      raise DamagedCheckpointError(f'checkpoint {step} is damaged: {problem}.')
    try:
      with _quiet_absl():  # Orbax logs a warning of its own for missing metadata.
        metadata = self._manager.item_metadata(step)
    except Exception as e:  # pylint: disable=broad-except  (orbax/TensorStore/OS)
      raise DamagedCheckpointError(
          f'checkpoint {step} in {self.directory} has unreadable metadata: '
          f'{_first_line(e)}.') from None
    if metadata is None:
      raise DamagedCheckpointError(
          f'checkpoint {step} in {self.directory} has no metadata '
          f'({self.step_dir(step)}/default/_METADATA).')
    if target is not None:
      difference = tree_difference(dict(metadata), target._asdict())
      if difference:
        raise CheckpointMismatchError(
            f'checkpoint {step} in {self.directory} does not fit the configured model: '
            f'{difference}.')

  def restore(self, target: TrainState, *, step: Optional[int] = None) -> TrainState:
    """Restores checkpoint `step` (default: latest) laid out like `target`.

    Args:
      target: TrainState of `jax.ShapeDtypeStruct`s carrying the wanted shardings — those
        of the current mesh, which may have another device count than the saving run's.

    Raises:
      DamagedCheckpointError / CheckpointMismatchError: naming the step and the file or
        the first differing parameter path.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise ValueError(f'directory: no checkpoint found in {self.directory}.')
    self.check(step, target)
    try:
      restored = self._manager.restore(
          step, args=ocp.args.StandardRestore(target._asdict()))
    except Exception as e:  # pylint: disable=broad-except  (orbax/TensorStore/OS)
      raise DamagedCheckpointError(
          f'checkpoint {step} in {self.directory} could not be read: {_first_line(e)}.'
      ) from None
    return TrainState(**restored)

  def restore_latest(self, target: Optional[TrainState] = None, *,
                     warn: Optional[Callable[[str], None]] = None,
                     quarantine: bool = False) -> tuple[int, Any]:
    """(step, state) of the newest checkpoint that restores, trying older ones in turn.

    Args:
      target: as for `restore`; None restores the saved tree as it is (host arrays).
      warn: called with one line per damaged step that was skipped (default:
        warnings.warn).
      quarantine: once an intact step is restored, move the damaged newer ones aside
        into `<directory>.damaged/` (kept, not deleted), so that a resumed run can write
        those steps anew. Nothing is moved when no step restores.

    Raises:
      ValueError: no checkpoint at all.
      CheckpointMismatchError: the newest intact checkpoint does not fit `target`
        (older ones are not tried: they are of the same run).
      NoIntactCheckpointError: every checkpoint is damaged (each named, with why).
    """
    warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
    steps = self.all_steps()
    if not steps:
      raise ValueError(f'directory: no checkpoint found in {self.directory}.')
    failures, damaged = [], []
    for step in reversed(steps):
      try:
        if target is None:
          self.check(step)
          try:
            state = self._manager.restore(step, args=ocp.args.StandardRestore())
          except Exception as e:  # pylint: disable=broad-except
            raise DamagedCheckpointError(
                f'checkpoint {step} in {self.directory} could not be read: '
                f'{_first_line(e)}.') from None
        else:
          state = self.restore(target, step=step)
      except CheckpointMismatchError:
        raise
      except DamagedCheckpointError as e:
        failures.append(str(e))
        damaged.append(step)
        older = [s for s in steps if s < step]
        next_try = f'trying step {older[-1]}' if older else 'no older checkpoint'
        warn(f'{e} Skipping it; {next_try}.')
        continue
      if quarantine:
        for bad in damaged:
          warn(f'moved damaged checkpoint {bad} to {self._quarantine(bad)}.')
      return step, state
    raise NoIntactCheckpointError(
        f'no intact checkpoint in {self.directory}: ' + ' '.join(failures))

  def _quarantine(self, step: int) -> str:
    """Moves step's directory into `<directory>.damaged/`; returns where it went."""
    dest = os.path.join(self.directory + '.damaged',
                        f'{step}-{time.strftime("%Y%m%dT%H%M%S")}')
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      shutil.move(self.step_dir(step), dest)
    self._manager.reload()
    return dest

  def restore_as_saved(self, *, step: Optional[int] = None) -> dict:
    """Checkpoint `step` (default: latest) as it was saved: the TrainState's fields as a
    dict of host arrays, with no target (for reading params without building the model's
    optimizer state, e.g. predict from a workdir)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise ValueError(f'directory: no checkpoint found in {self.directory}.')
    self.check(step)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore())
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpointError(
          f'checkpoint {step} in {self.directory} could not be read: {_first_line(e)}.'
      ) from None

  def wait(self) -> None:
    """Blocks until an asynchronous save has finished (and its manifest is written)."""
    self._manager.wait_until_finished()
    self._finish_manifests()

  def close(self) -> None:
    self.wait()
    self._manager.close()


def abstract_target(state_shapes: TrainState, shardings: TrainState) -> TrainState:
  """ShapeDtypeStructs with shardings: what `Checkpointer.restore` needs as target."""
  return jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      state_shapes, shardings)
