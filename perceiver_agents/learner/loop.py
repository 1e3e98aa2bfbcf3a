"""The one training loop: train(task, config, workdir) and evaluate(task, config, workdir).

A task (see perceiver_agents.tasks.base.Task) hands the loop
  model         hk.TransformedWithState, apply(params, state, rng, batch, is_training=...)
  loss          (outputs, batch) -> per-example losses [B]
  metrics       (outputs, batch) -> {name: per-example values [B]}
  train_batch   step -> the global numpy batch of that step (deterministic in seed and step)
  eval_batches  batch_size -> iterable of numpy batches of at most batch_size examples
and optionally train_iterator(start_step), an iterator of batches that replaces
train_batch in training (an RL task's actors; learner/data.py says what else such an
iterator may do). The loop knows nothing else about it. Because data and randomness are
functions of the step, a run restored from the checkpoint of step s continues exactly as
if never stopped.
"""

import operator
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import ml_collections
import numpy as np
import tqdm

from perceiver_agents.kernels import cpu_features
from perceiver_agents.learner import checkpoint as checkpoint_lib
from perceiver_agents.learner import data as data_lib
from perceiver_agents.learner import optim
from perceiver_agents.learner import sharding as sharding_lib
from perceiver_agents.learner import update as update_lib
from perceiver_agents.learner.metrics import MetricsWriter
from perceiver_agents.learner.state import TrainState

CHECKPOINT_DIR = 'checkpoints'
# Updates dispatched ahead of the newest computed one. One keeps the device busy while the
# host fetches the next batch; more only delays what actors and logs see (policy lag).
MAX_IN_FLIGHT = 1


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or infinite; no checkpoint was written after it."""


class Programs(NamedTuple):
  """The compiled functions of a run on one mesh, and where their arrays live."""
  mesh: jax.sharding.Mesh
  init: Callable[[jax.Array, Any], TrainState]        # (rng, batch) -> TrainState
  update: Callable[[TrainState, Any], tuple]          # (state, batch) -> (state, scalars)
  evaluate: Callable[..., Mapping[str, jax.Array]]    # (params, state, batch, mask) -> sums
  shapes: TrainState                                  # ShapeDtypeStructs of the state
  shardings: TrainState                               # NamedShardings of the state
  schedule: Callable[[int], float]                    # optimizer update -> learning rate


def _check_divisible(name: str, value: int, num_devices: int) -> None:
  if value < 1 or value % num_devices:
    raise ValueError(f'{name} must be a positive multiple of the number of devices '
                     f'({num_devices}), got {value}.')


def build_programs(task: Any, config: ml_collections.ConfigDict,
                   mesh: Optional[jax.sharding.Mesh] = None) -> Programs:
  """Jit-compiles init/update/eval for `task` on `mesh` (default: all devices).

  The update donates the incoming TrainState's buffers.
  """
  mesh = sharding_lib.make_mesh() if mesh is None else mesh
  _check_divisible('train.batch_size', config.train.batch_size, mesh.size)
  _check_divisible('eval.batch_size', config.eval.batch_size, mesh.size)
  if config.train.steps < 1:
    raise ValueError(f'train.steps must be >= 1, got {config.train.steps}.')
  dtype = update_lib.compute_dtype(config.train.compute_dtype)
  if config.train.compute_dtype == 'bfloat16':
    cpu_features.warn_if_bf16_is_slow(jax.default_backend())
  optimizer, schedule = optim.make_optimizer(config, total_steps=config.train.steps)

  model = update_lib.with_kernels(task.model, config.train.get('kernels'))
  init = update_lib.make_init_fn(model, optimizer)
  sample = task.train_batch(0)
  shapes = jax.eval_shape(init, jax.random.PRNGKey(0), sample)
  fsdp = config.mesh.fsdp
  rep = sharding_lib.replicated(mesh)
  shardings = TrainState(
      params=sharding_lib.tree_shardings(shapes.params, mesh, fsdp=fsdp),
      state=jax.tree.map(lambda _: rep, shapes.state),
      opt_state=sharding_lib.tree_shardings(shapes.opt_state, mesh, fsdp=fsdp),
      step=rep, rng=rep)
  data = sharding_lib.batch_sharding(mesh)

  update = update_lib.make_update_fn(model, task.loss, task.metrics, optimizer,
                                     dtype=dtype)
  evaluate = update_lib.make_eval_fn(model, task.loss, task.metrics, dtype=dtype)
  return Programs(
      mesh=mesh,
      init=jax.jit(init, in_shardings=(rep, data), out_shardings=shardings),
      update=jax.jit(update, in_shardings=(shardings, data), out_shardings=(shardings, rep),
                     donate_argnums=0),
      evaluate=jax.jit(evaluate, in_shardings=(shardings.params, shardings.state, data, data),
                       out_shardings=rep),
      shapes=shapes, shardings=shardings, schedule=schedule)


def initial_state(task: Any, config: ml_collections.ConfigDict,
                  programs: Programs) -> TrainState:
  """A fresh TrainState from `config.seed`, laid out on the programs' mesh."""
  batch = sharding_lib.global_batch_to_device(task.train_batch(0), programs.mesh)
  return programs.init(jax.random.PRNGKey(config.seed), batch)


def run_eval(task: Any, config: ml_collections.ConfigDict, programs: Programs,
             ts: TrainState) -> dict:
  """Means of 'loss' and the task's metrics over the task's eval set."""
  size = config.eval.batch_size
  totals = None
  for batch in task.eval_batches(size):
    n = len(next(iter(jax.tree.leaves(batch))))
    if n > size:
      raise ValueError(f'task eval_batches gave {n} examples for eval.batch_size={size}.')
    padded = jax.tree.map(
        lambda x: np.concatenate([x, np.repeat(x[:1], size - n, axis=0)]), batch)
    mask = np.arange(size) < n
    sums = programs.evaluate(
        ts.params, ts.state, sharding_lib.global_batch_to_device(padded, programs.mesh),
        sharding_lib.global_batch_to_device(mask, programs.mesh))
    totals = sums if totals is None else jax.tree.map(operator.add, totals, sums)
  if totals is None:
    raise ValueError('task eval_batches gave no batches.')
  totals = jax.device_get(totals)
  count = totals.pop('count')
  return {k: float(v / count) for k, v in totals.items()}


class TrainResult(NamedTuple):
  step: int                      # Updates applied when the run ended.
  train_metrics: dict            # The last logged training scalars.
  eval_metrics: dict             # The last evaluation ({} if none ran).
  interrupted_by: Optional[int]  # The signal number that stopped the run early, or None.


class _StopSignals:
  """Turns SIGINT/SIGTERM into a flag the loop checks between steps (main thread only)."""

  def __init__(self):
    self.received: Optional[int] = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.received is not None:  # A second signal: stop now.
      raise KeyboardInterrupt
    self.received = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _first_nonfinite(pending: list) -> Optional[tuple]:
  """(step, value) of the first non-finite loss among [(step, scalars)], else None."""
  losses = jax.device_get([scalars['loss'] for _, scalars in pending])
  for (step, _), loss in zip(pending, losses):
    if not np.isfinite(loss):
      return step, float(loss)
  return None


def open_outputs(workdir: str, config: ml_collections.ConfigDict) -> Optional[MetricsWriter]:
  """On the chief process: writes workdir/config.json and returns the metrics writer
  (metrics.jsonl + TensorBoard); None on the other processes."""
  if jax.process_index() != 0:
    return None
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  return MetricsWriter(workdir)


def warn(message: str) -> None:
  """One warning line on stderr (damaged checkpoints skipped, and the like)."""
  print(f'perceiver-agents: warning: {message}', file=sys.stderr, flush=True)


def restore_latest(checkpoints: checkpoint_lib.Checkpointer, programs: Programs, *,
                   quarantine: bool = False) -> tuple[int, TrainState]:
  """(step, state) of the newest intact checkpoint, laid out on the programs' mesh.

  Damaged checkpoints are skipped with one warning each (and with `quarantine`, moved
  aside so that the run can write those steps anew).
  """
  return checkpoints.restore_latest(
      checkpoint_lib.abstract_target(programs.shapes, programs.shardings),
      warn=warn, quarantine=quarantine)


def train(task: Any, config: ml_collections.ConfigDict, workdir: str, *,
          mesh: Optional[jax.sharding.Mesh] = None,
          on_ready: Optional[Callable[[Optional[int]], None]] = None) -> TrainResult:
  """Trains `task` for config.train.steps, resuming from `workdir` if it has checkpoints.

  Writes to `workdir`: checkpoints/<step>/, metrics.jsonl, TensorBoard event files and
  config.json. Saves a checkpoint every checkpoint.every steps, at the end, and on
  SIGINT/SIGTERM (then returns with `interrupted_by` set). Resumes from the newest intact
  checkpoint; damaged newer ones are moved aside into checkpoints.damaged/ with a warning.
  `on_ready(restored_step or None)` is called once the state is built or restored, before
  the first update (the CLI records the run then).

  Raises:
    NonFiniteLossError: naming the step whose loss was NaN/inf; checkpoints written before
      it are left as they were and none is written after it.
  """
  for name, value, low in (('train.log_every', config.train.log_every, 1),
                           ('eval.every', config.eval.every, 0),
                           ('checkpoint.every', config.checkpoint.every, 0)):
    if value < low:
      raise ValueError(f'{name} must be >= {low}, got {value}.')
  programs = build_programs(task, config, mesh)
  total = config.train.steps
  is_chief = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  checkpoints = checkpoint_lib.Checkpointer(
      os.path.join(workdir, CHECKPOINT_DIR), keep=config.checkpoint.keep,
      async_save=config.checkpoint.async_save)
  try:
    if checkpoints.latest_step() is None:
      latest, ts = None, initial_state(task, config, programs)
    else:
      latest, ts = restore_latest(checkpoints, programs, quarantine=True)
  except BaseException:
    checkpoints.close()
    raise
  step = 0 if latest is None else latest
  if on_ready is not None:
    on_ready(latest)
  writer = open_outputs(workdir, config)

  log_every, eval_every = config.train.log_every, config.eval.every
  ckpt_every, batch_size = config.checkpoint.every, config.train.batch_size
  accumulate = config.optimizer.accumulate_steps
  pending = []            # [(batch step, device scalars)] since the last finiteness check.
  train_metrics, eval_metrics = {}, {}
  last_saved = latest
  bar = tqdm.tqdm(total=total, initial=step, unit='step', dynamic_ncols=True,
                  disable=not (is_chief and config.train.progress_bar))
  if latest is not None:
    bar.write(f'Resumed from checkpoint at step {latest} in {checkpoints.directory}.')

  def check_finite():
    bad = _first_nonfinite(pending) if pending else None
    if bad is not None:
      good = checkpoints.latest_step()
      kept = f'step {good}' if good is not None else 'none'
      raise NonFiniteLossError(
          f'Loss is {bad[1]} at step {bad[0]}; stopping. The last good checkpoint '
          f'({kept}) in {checkpoints.directory} is unchanged.')

  iterator = iterator_metrics = None

  def save():
    nonlocal last_saved
    check_finite()
    if last_saved != step:
      checkpoints.save(ts, step=step)
      data_lib.save_state(iterator, workdir, step, checkpoints.all_steps())
      last_saved = step

  def log(elapsed: float, steps_done: int):
    nonlocal train_metrics
    check_finite()
    stacked = jax.device_get([scalars for _, scalars in pending])
    train_metrics = {k: float(np.mean([s[k] for s in stacked])) for k in stacked[0]}
    train_metrics['learning_rate'] = float(programs.schedule(step // accumulate))
    train_metrics['examples_per_s'] = steps_done * batch_size / max(elapsed, 1e-9)
    if iterator_metrics is not None:
      train_metrics.update(iterator_metrics())
    pending.clear()
    if writer:
      writer.write(step, 'train', train_metrics)
    bar.set_postfix(loss=f'{train_metrics["loss"]:.4f}',
                    ex_per_s=f'{train_metrics["examples_per_s"]:.0f}')

  def evaluate_now():
    nonlocal eval_metrics
    check_finite()
    eval_metrics = run_eval(task, config, programs, ts)
    if writer:
      writer.write(step, 'eval', eval_metrics)
    bar.write(f'step {step}: eval ' + _format(eval_metrics))

  try:
    iterator = data_lib.train_iterator(task, step)
    if data_lib.restore_state(iterator, workdir, latest):
      bar.write(f'Resumed the train iterator state of step {latest}.')
    publish = getattr(iterator, 'publish', None)
    iterator_metrics = getattr(iterator, 'metrics', None)
    prefetcher = data_lib.DevicePrefetcher(iterator, programs.mesh)
    with _StopSignals() as stop:
      t_log, steps_since_log = time.perf_counter(), 0
      if publish is not None:
        publish(ts.params, step)
      # A batch once fetched is trained on (a stop signal during its fetch included).
      batch = prefetcher.fetch() if step < total and stop.received is None else None
      in_flight = []
      while batch is not None:
        ts, scalars = programs.update(ts, batch)
        pending.append((step, scalars))
        in_flight.append(scalars)
        if len(in_flight) > MAX_IN_FLIGHT:
          jax.block_until_ready(in_flight.pop(0))
        step += 1
        if publish is not None:
          publish(ts.params, step)
        steps_since_log += 1
        bar.update(1)
        if step % log_every == 0 or step == total:
          log(time.perf_counter() - t_log, steps_since_log)
          t_log, steps_since_log = time.perf_counter(), 0
        t_pause = time.perf_counter()
        if eval_every and step % eval_every == 0 and step < total:
          evaluate_now()  # The final evaluation happens after the loop.
        if ckpt_every and step % ckpt_every == 0:
          save()
        t_log += time.perf_counter() - t_pause  # Throughput counts training time only.
        batch = None
        if step < total and stop.received is None:
          batch = prefetcher.fetch()  # Overlaps the update just dispatched.
      save()
      if stop.received is None:
        evaluate_now()
      else:
        bar.write(f'Stopped by signal {stop.received} at step {step}; checkpoint saved.')
      checkpoints.wait()
      return TrainResult(step, train_metrics, eval_metrics, stop.received)
  finally:
    close = getattr(iterator, 'close', None)
    if close is not None:
      close()
    bar.close()
    checkpoints.close()
    if writer:
      writer.close()


def load_state(task: Any, config: ml_collections.ConfigDict, workdir: str, *,
               programs: Optional[Programs] = None,
               step: Optional[int] = None) -> tuple[Programs, TrainState]:
  """Restores checkpoint `step` (default: the newest intact one) of `workdir` onto the
  current mesh. The checkpoint may come from a run on another number of devices.
  """
  programs = build_programs(task, config) if programs is None else programs
  checkpoints = checkpoint_lib.Checkpointer(
      os.path.join(workdir, CHECKPOINT_DIR), keep=config.checkpoint.keep)
  try:
    if checkpoints.latest_step() is None:
      raise ValueError(f'workdir: no checkpoint in {checkpoints.directory}; train first.')
    if step is None:
      _, ts = restore_latest(checkpoints, programs)
    else:
      ts = checkpoints.restore(
          checkpoint_lib.abstract_target(programs.shapes, programs.shardings), step=step)
  finally:
    checkpoints.close()
  return programs, ts


def evaluate(task: Any, config: ml_collections.ConfigDict, workdir: str, *,
             mesh: Optional[jax.sharding.Mesh] = None) -> tuple[int, dict]:
  """Evaluates the latest checkpoint in `workdir`; returns (step, metrics)."""
  programs, ts = load_state(task, config, workdir,
                            programs=build_programs(task, config, mesh))
  return int(ts.step), run_eval(task, config, programs, ts)


def _format(metrics: Mapping[str, float]) -> str:
  return ', '.join(f'{k}={v:.4f}' for k, v in sorted(metrics.items()))
