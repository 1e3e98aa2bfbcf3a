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


def load_checkpoint(workdir: str, target: Any, *, step: Optional[int] = None,
                    keep: int = 3) -> Any:
  """The state of checkpoint `step` of `workdir` (default: the newest intact one, damaged
  newer ones skipped with a warning), laid out like `target` (abstract_target's)."""
  checkpoints = checkpoint_lib.Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), keep=keep)
  try:
    if checkpoints.latest_step() is None:
      raise ValueError(f'workdir: no checkpoint in {checkpoints.directory}; train first.')
    if step is None:
      return checkpoints.restore_latest(target, warn=warn)[1]
    return checkpoints.restore(target, step=step)
  finally:
    checkpoints.close()


class Run:
  """The skeleton a training loop runs in (learner.train here, the Anakin loop of
  agents/anakin): the workdir's checkpoints, resumed from the newest intact one (damaged
  newer ones moved aside into checkpoints.damaged/ with a warning), config.json and the
  metrics writer, the progress bar, SIGINT/SIGTERM turned into a stop flag (a second
  signal stops at once), and saving at most once per step.

      with Run(workdir, config, total=n, unit='step', init=fresh_state,
               target=abstract_target(shapes, shardings)) as run:
        state = run.state
        while run.more():
          state = update(state)
          run.advance()
          if run.due(config.checkpoint.every):
            run.save(state)
        run.save(state)
        run.finish()

  Attributes: checkpoints, restored (the step resumed from, or None), state (the
  restored or fresh state), step (updates done), writer (None off the chief process), bar.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict, *, total: int,
               unit: str, init: Callable[[], Any], target: Any,
               on_ready: Optional[Callable[[Optional[int]], None]] = None):
    os.makedirs(workdir, exist_ok=True)
    self.total = total
    self.checkpoints = checkpoint_lib.Checkpointer(
        os.path.join(workdir, CHECKPOINT_DIR), keep=config.checkpoint.keep,
        async_save=config.checkpoint.async_save)
    self.writer, self.bar = None, None
    try:
      if self.checkpoints.latest_step() is None:
        self.restored, self.state = None, init()
      else:
        self.restored, self.state = self.checkpoints.restore_latest(
            target, warn=warn, quarantine=True)
      self.step = 0 if self.restored is None else self.restored
      self._last_saved = self.restored
      if on_ready is not None:
        on_ready(self.restored)
      self.writer = open_outputs(workdir, config)
      self.bar = tqdm.tqdm(total=total, initial=self.step, unit=unit, dynamic_ncols=True,
                           disable=not (jax.process_index() == 0 and
                                        config.train.progress_bar))
    except BaseException:
      self.close()
      raise
    if self.restored is not None:
      self.bar.write(f'Resumed from checkpoint at step {self.restored} in '
                     f'{self.checkpoints.directory}.')
    self._signals = _StopSignals()

  def __enter__(self) -> 'Run':
    self._signals.__enter__()
    return self

  def __exit__(self, *exc) -> None:
    self._signals.__exit__(*exc)
    self.close()

  @property
  def stopped_by(self) -> Optional[int]:
    """The signal number received (SIGINT/SIGTERM), or None."""
    return self._signals.received

  def more(self) -> bool:
    """Whether to run another update: steps remain and no stop signal came."""
    return self.step < self.total and self.stopped_by is None

  def advance(self) -> None:
    """Counts one update done (and moves the progress bar)."""
    self.step += 1
    self.bar.update(1)

  def due(self, every: int) -> bool:
    """Whether the step just done is a multiple of `every` (0: never)."""
    return bool(every) and self.step % every == 0

  def write(self, split: str, metrics: Mapping[str, float]) -> None:
    if self.writer:
      self.writer.write(self.step, split, metrics)

  def save(self, state: Any) -> bool:
    """Checkpoints `state` as the current step unless that step is saved already."""
    if self._last_saved == self.step:
      return False
    self.checkpoints.save(state, step=self.step)
    self._last_saved = self.step
    return True

  def finish(self) -> None:
    """Says so when a signal stopped the run, and waits for pending saves."""
    if self.stopped_by is not None:
      self.bar.write(f'Stopped by signal {self.stopped_by} at step {self.step}; '
                     'checkpoint saved.')
    self.checkpoints.wait()

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
    self.checkpoints.close()
    if self.writer:
      self.writer.close()


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
  log_every, eval_every = config.train.log_every, config.eval.every
  ckpt_every, batch_size = config.checkpoint.every, config.train.batch_size
  accumulate = config.optimizer.accumulate_steps
  pending = []            # [(batch step, device scalars)] since the last finiteness check.
  train_metrics, eval_metrics = {}, {}
  iterator = iterator_metrics = None

  with Run(workdir, config, total=total, unit='step',
           init=lambda: initial_state(task, config, programs),
           target=checkpoint_lib.abstract_target(programs.shapes, programs.shardings),
           on_ready=on_ready) as run:
    ts = run.state

    def check_finite():
      bad = _first_nonfinite(pending) if pending else None
      if bad is not None:
        good = run.checkpoints.latest_step()
        kept = f'step {good}' if good is not None else 'none'
        raise NonFiniteLossError(
            f'Loss is {bad[1]} at step {bad[0]}; stopping. The last good checkpoint '
            f'({kept}) in {run.checkpoints.directory} is unchanged.')

    def save():
      check_finite()
      if run.save(ts):
        data_lib.save_state(iterator, workdir, run.step, run.checkpoints.all_steps())

    def log(elapsed: float, steps_done: int):
      nonlocal train_metrics
      check_finite()
      stacked = jax.device_get([scalars for _, scalars in pending])
      train_metrics = {k: float(np.mean([s[k] for s in stacked])) for k in stacked[0]}
      train_metrics['learning_rate'] = float(programs.schedule(run.step // accumulate))
      train_metrics['examples_per_s'] = steps_done * batch_size / max(elapsed, 1e-9)
      if iterator_metrics is not None:
        train_metrics.update(iterator_metrics())
      pending.clear()
      run.write('train', train_metrics)
      run.bar.set_postfix(loss=f'{train_metrics["loss"]:.4f}',
                          ex_per_s=f'{train_metrics["examples_per_s"]:.0f}')

    def evaluate_now():
      nonlocal eval_metrics
      check_finite()
      eval_metrics = run_eval(task, config, programs, ts)
      run.write('eval', eval_metrics)
      run.bar.write(f'step {run.step}: eval ' + _format(eval_metrics))

    try:
      iterator = data_lib.train_iterator(task, run.step)
      if data_lib.restore_state(iterator, workdir, run.restored):
        run.bar.write(f'Resumed the train iterator state of step {run.restored}.')
      publish = getattr(iterator, 'publish', None)
      iterator_metrics = getattr(iterator, 'metrics', None)
      prefetcher = data_lib.DevicePrefetcher(iterator, programs.mesh)
      t_log, steps_since_log = time.perf_counter(), 0
      if publish is not None:
        publish(ts.params, run.step)
      # A batch once fetched is trained on (a stop signal during its fetch included).
      batch = prefetcher.fetch() if run.more() else None
      while batch is not None:
        ts, scalars = programs.update(ts, batch)
        pending.append((run.step, scalars))
        run.advance()
        if publish is not None:
          publish(ts.params, run.step)
        steps_since_log += 1
        if run.due(log_every) or run.step == total:
          log(time.perf_counter() - t_log, steps_since_log)
          t_log, steps_since_log = time.perf_counter(), 0
        t_pause = time.perf_counter()
        if run.due(eval_every) and run.step < total:
          evaluate_now()  # The final evaluation happens after the loop.
        if run.due(ckpt_every):
          save()
        t_log += time.perf_counter() - t_pause  # Throughput counts training time only.
        batch = prefetcher.fetch() if run.more() else None  # Overlaps the update.
      save()
      if run.stopped_by is None:
        evaluate_now()
      run.finish()
      return TrainResult(run.step, train_metrics, eval_metrics, run.stopped_by)
    finally:
      close = getattr(iterator, 'close', None)
      if close is not None:
        close()


def load_state(task: Any, config: ml_collections.ConfigDict, workdir: str, *,
               programs: Optional[Programs] = None,
               step: Optional[int] = None) -> tuple[Programs, TrainState]:
  """Restores checkpoint `step` (default: the newest intact one) of `workdir` onto the
  current mesh. The checkpoint may come from a run on another number of devices.
  """
  programs = build_programs(task, config) if programs is None else programs
  ts = load_checkpoint(
      workdir, checkpoint_lib.abstract_target(programs.shapes, programs.shardings),
      step=step, keep=config.checkpoint.keep)
  return programs, ts


def evaluate(task: Any, config: ml_collections.ConfigDict, workdir: str, *,
             mesh: Optional[jax.sharding.Mesh] = None) -> tuple[int, dict]:
  """Evaluates the latest checkpoint in `workdir`; returns (step, metrics)."""
  programs, ts = load_state(task, config, workdir,
                            programs=build_programs(task, config, mesh))
  return int(ts.step), run_eval(task, config, programs, ts)


def _format(metrics: Mapping[str, float]) -> str:
  return ', '.join(f'{k}={v:.4f}' for k, v in sorted(metrics.items()))
