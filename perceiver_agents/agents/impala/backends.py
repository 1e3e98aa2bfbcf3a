"""Actor backends behind one interface, and the iterator of learner batches they feed.

    inline   the actors run in the learner's thread, one unroll at a time, with the newest
             parameters: synchronous and deterministic (no policy lag; exact resume).
    threads  one thread per actor in this process, each stepping its environments with the
             jitted policy and pushing unrolls into a queue the learner drains, at most
             actors.queue_size unrolls ahead of it (the Sebulba pattern of the Podracer
             paper): acting overlaps learning.
    ray      Ray actors in other processes, on this machine or on machines that joined
             the cluster (agents/impala/ray_backend.py).

A pool (`InlineActors`, `ThreadActors`, `ray_backend.RayActors`) reads parameters from a
`ParameterSource` that the learner publishes to after every update, and `get()` returns
the next unroll: (trajectories [E, K, ...], UnrollStats). An actor that raises (or, with
Ray, whose process dies) is replaced by a fresh one (new environments) up to
`actors.max_restarts` times per run, with a logged warning; the failure after that stops
the run with the actor's error.

`TrajectoryIterator` turns unrolls into learner batches [B, K, ...] and reports the
actors' metrics (policy lag, drops, restarts, episodes, environment steps per second).
"""

import collections
import logging
import queue
import threading
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from perceiver_agents.agents.impala.acting import Actor, UnrollStats

RETURN_WINDOW = 100   # Episodes averaged in 'episode_return' and 'episode_length'.
POLL_S = 0.2         # How often blocked threads look at the stop flag.

log = logging.getLogger('perceiver_agents.agents.impala')

ActorFactory = Callable[[int, int], Actor]   # (actor_id, incarnation) -> a fresh Actor


class ActorFailure(RuntimeError):
  """An actor failed after the run used up actors.max_restarts."""


class ParameterSource:
  """The parameters the learner published, by version; thread-safe.

  `version` is the number of updates applied to the parameters. The learner's parameter
  buffers are donated to its next update, so `publish` keeps its own copy, dispatched
  asynchronously: it waits for the previous update only, not for this one. `latest()` hands out the
  newest version whose copy is computed, so an actor never waits for the update in
  flight and acting overlaps learning (a policy lag of about one update, which V-trace
  corrects); `latest(newest=True)` waits for the newest published version instead (the
  inline backend: no lag, deterministic).
  """

  def __init__(self):
    self._cond = threading.Condition()
    self._ready = None       # (params, version), computed.
    self._pending = []       # Newer (params, version), oldest first; the last maybe
                             # in flight.
    self._copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))

  def publish(self, params: Any, version: int) -> None:
    """Keeps a copy of `params`; first waits for the previous version's copy, so that the
    learner runs at most one update ahead of what actors can act with."""
    with self._cond:
      previous = self._pending[-1][0] if self._pending else None
    if previous is not None:
      jax.block_until_ready(previous)
    params = self._copy(params)
    with self._cond:
      self._pending.append((params, int(version)))
      self._cond.notify_all()

  def _promote(self) -> None:
    """Under the lock: the newest computed pending version becomes the ready one."""
    for i in reversed(range(len(self._pending))):
      if all(leaf.is_ready() for leaf in jax.tree.leaves(self._pending[i][0])):
        self._ready = self._pending[i]
        del self._pending[:i + 1]
        return

  def latest(self, stop: Optional[threading.Event] = None, *,
             newest: bool = False) -> tuple[Any, int]:
    """(params, version); blocks until something is published (or `stop` is set: then
    (None, -1)). Without `newest`, only the first call of a run waits for a copy."""
    with self._cond:
      while self._ready is None and not self._pending:
        if stop is not None and stop.is_set():
          return None, -1
        self._cond.wait(POLL_S)
      self._promote()
      if self._ready is not None and not (newest and self._pending):
        return self._ready
      wanted = self._pending[-1] if newest else self._pending[0]
    jax.block_until_ready(wanted[0])
    with self._cond:
      self._promote()
    return wanted


def _first_line(error: BaseException, limit: int = 200) -> str:
  """'Type: first line of the message' (Ray's errors run over many lines)."""
  lines = str(error).strip().splitlines()
  text = f'{type(error).__name__}: {lines[0] if lines else ""}'
  return text if len(text) <= limit else text[:limit] + '...'


class RestartBudget:
  """Counts actor restarts against actors.max_restarts, logging each one."""

  def __init__(self, max_restarts: int):
    if max_restarts < 0:
      raise ValueError(f'actors.max_restarts must be >= 0, got {max_restarts}.')
    self._max = max_restarts
    self._lock = threading.Lock()
    self.count = 0

  def allow(self, actor_id: int, error: BaseException) -> bool:
    """True (and logs the restart) if actor `actor_id` may be restarted after `error`."""
    error = _first_line(error)
    with self._lock:
      if self.count >= self._max:
        log.error('actor %d failed (%s); actors.max_restarts=%d restarts used, '
                  'stopping.', actor_id, error, self._max)
        return False
      self.count += 1
      log.warning('actor %d failed (%s); restarting it with fresh environments '
                  '(restart %d of at most %d).', actor_id, error, self.count, self._max)
      return True


class InlineActors:
  """`num_actors` actors stepped in the caller's thread, in turn, with the newest params."""

  def __init__(self, make_actor: ActorFactory, *, num_actors: int, max_restarts: int):
    self._make_actor = make_actor
    self._actors = [make_actor(i, 0) for i in range(num_actors)]
    self._incarnations = [0] * num_actors
    self._next = 0
    self._source = None
    self._restarts = RestartBudget(max_restarts)

  @property
  def restarts(self) -> int:
    return self._restarts.count

  def start(self, source: ParameterSource) -> None:
    self._source = source

  def get(self) -> tuple[dict, UnrollStats]:
    i = self._next
    self._next = (i + 1) % len(self._actors)
    while True:
      params, version = self._source.latest(newest=True)
      try:
        return self._actors[i].unroll(params, version)
      except Exception as e:  # pylint: disable=broad-except
        if not self._restarts.allow(i, e):
          raise ActorFailure(f'actor {i} failed: {type(e).__name__}: {e}') from e
        self._actors[i].close()
        self._incarnations[i] += 1
        self._actors[i] = self._make_actor(i, self._incarnations[i])

  def get_state(self) -> dict:
    return {'next': self._next, 'incarnations': list(self._incarnations),
            'actors': [a.get_state() for a in self._actors]}

  def set_state(self, state: dict) -> None:
    if len(state['actors']) != len(self._actors):
      raise ValueError(f'actor state: saved for {len(state["actors"])} actors, this run '
                       f'has actors.num_actors={len(self._actors)}.')
    self._next, self._incarnations = state['next'], list(state['incarnations'])
    for actor, saved in zip(self._actors, state['actors']):
      actor.set_state(saved)

  def close(self) -> None:
    for actor in self._actors:
      actor.close()


class UnrollCredits:
  """At most `limit` unrolls acted ahead of the learner (in progress or queued).

  An actor takes a credit before it starts an unroll and the learner gives it back when
  it takes the unroll (`returned`). With one batch's worth of credits the actors act on
  the next batch while the learner's update runs, with the parameters computed before
  it: a policy lag of about one update, never more than the credits allow.

  `on_demand`: no credit is free until the learner asks for unrolls (`request`), and a
  taken unroll gives none back, so actors act only for the batch being assembled, with
  the newest parameters (no lag; acting runs in parallel over the actors but does not
  overlap the update).
  """

  def __init__(self, limit: int, *, on_demand: bool = False):
    if limit < 1 and not on_demand:
      raise ValueError(f'actors.queue_size must allow at least one unroll, got {limit}.')
    self.on_demand = on_demand
    self._cond = threading.Condition()
    self._free = 0 if on_demand else limit

  def take(self, stop: threading.Event, *, block: bool = True) -> bool:
    """Takes a credit; False if none is free (block=False) or `stop` is set."""
    with self._cond:
      while self._free == 0:
        if not block or stop.is_set():
          return False
        self._cond.wait(POLL_S)
      self._free -= 1
      return True

  def give(self, count: int = 1) -> None:
    """Frees `count` credits (an unroll that produced nothing gives its own back)."""
    with self._cond:
      self._free += count
      self._cond.notify_all()

  def returned(self) -> None:
    """The learner took an unroll: its credit is free again, unless on demand."""
    if not self.on_demand:
      self.give()

  def request(self, count: int) -> None:
    """On demand: the learner asks for `count` more unrolls."""
    if not self.on_demand:
      raise RuntimeError('UnrollCredits.request: the actors act ahead, not on demand.')
    self.give(count)


class FailedActor(NamedTuple):
  """Queued by an actor thread that may not restart any more."""
  actor_id: int
  error: BaseException


class QueuedActors:
  """What the threads and ray pools share: the queue of finished unrolls that the learner
  drains (`get`), the credits that bound it (UnrollCredits; `request` when on demand),
  the restart budget and the stop flag. Subclasses fill the queue from their actors and
  say, through `_stopped()`, when nothing will fill it any more."""

  def __init__(self, *, queue_size: int, max_restarts: int, on_demand: bool):
    self._queue = queue.Queue()   # Bounded by the credits.
    self._credits = UnrollCredits(queue_size, on_demand=on_demand)
    self._stop = threading.Event()
    self._restarts = RestartBudget(max_restarts)

  @property
  def restarts(self) -> int:
    return self._restarts.count

  def _stopped(self) -> Optional[str]:
    """Why no unroll will come any more (the actors' threads ended), else None."""
    raise NotImplementedError

  def get(self) -> tuple[dict, UnrollStats]:
    while True:
      try:
        item = self._queue.get(timeout=POLL_S)
      except queue.Empty:
        reason = self._stopped()
        if reason:
          raise ActorFailure(reason) from None
        continue
      if isinstance(item, FailedActor):
        raise ActorFailure(f'actor {item.actor_id} failed: {type(item.error).__name__}: '
                           f'{item.error}') from item.error
      self._credits.returned()
      return item

  def request(self, count: int) -> None:
    self._credits.request(count)


class ThreadActors(QueuedActors):
  """`num_actors` actor threads, at most `queue_size` unrolls ahead of the learner (or,
  `on_demand`, acting only the unrolls the learner asks for: UnrollCredits)."""

  def __init__(self, make_actor: ActorFactory, *, num_actors: int, queue_size: int,
               max_restarts: int, on_demand: bool = False):
    super().__init__(queue_size=queue_size, max_restarts=max_restarts,
                     on_demand=on_demand)
    self._make_actor = make_actor
    self._num_actors = num_actors
    self._threads = []
    # Build (and check) the first actors here, so that configuration errors surface in
    # the caller's thread.
    self._first = [make_actor(i, 0) for i in range(num_actors)]

  def start(self, source: ParameterSource) -> None:
    for i in range(self._num_actors):
      thread = threading.Thread(target=self._run, args=(i, source), daemon=True,
                                name=f'impala-actor-{i}')
      thread.start()
      self._threads.append(thread)

  def _unroll(self, actor: Actor, source: ParameterSource) -> bool:
    """One unroll into the queue, once a credit is free; False once stopped."""
    if not self._credits.take(self._stop):
      return False
    try:
      params, version = source.latest(self._stop, newest=self._credits.on_demand)
      if params is None:
        return False
      self._queue.put(actor.unroll(params, version))
      return True
    except BaseException:
      self._credits.give()   # This unroll produced nothing.
      raise

  def _run(self, actor_id: int, source: ParameterSource) -> None:
    actor, incarnation = self._first[actor_id], 0
    while not self._stop.is_set():
      try:
        if actor is None:
          actor = self._make_actor(actor_id, incarnation)
        if not self._unroll(actor, source):
          break
      except Exception as e:  # pylint: disable=broad-except
        if self._stop.is_set():
          break
        if actor is not None:
          actor.close()
        actor = None
        if not self._restarts.allow(actor_id, e):
          self._queue.put(FailedActor(actor_id, e))
          return
        incarnation += 1
    if actor is not None:
      actor.close()

  def _stopped(self) -> Optional[str]:
    if self._threads and not any(t.is_alive() for t in self._threads):
      return 'all actor threads have stopped.'
    return None

  def close(self) -> None:
    self._stop.set()
    for thread in self._threads:
      thread.join(timeout=30)


class TrajectoryIterator:
  """Learner batches [B, K, ...] of actor trajectories, for the learner's update `step`.

  The learner calls `publish(params, step)` after every update (and once with the
  starting parameters); `next()` then returns the batch for update `step`, made of
  `batch_size` trajectories from whole unrolls. An unroll acted with parameters more
  than `max_policy_lag` updates old is dropped (-1: never). `unrolls_per_batch` > 0:
  the pool acts on demand (UnrollCredits), and `next()` asks it for that many unrolls.
  `metrics()` reports, since its previous call: 'policy_lag_mean' / 'policy_lag_max'
  (updates between the acting parameters and the update that trains on them),
  'env_steps_per_s'; and for the whole run: 'dropped_trajectories', 'actor_restarts',
  'episodes', 'env_steps', and 'episode_return' / 'episode_length' (means over the last
  100 episodes).
  """

  def __init__(self, pool: Any, *, batch_size: int, max_policy_lag: int = -1,
               unrolls_per_batch: int = 0):
    self._pool = pool
    self._batch_size = batch_size
    self._max_lag = max_policy_lag
    self._unrolls_per_batch = unrolls_per_batch
    self._source = ParameterSource()
    self._step = 0
    self._started = False
    self.last_batch = None
    self._returns = collections.deque(maxlen=RETURN_WINDOW)
    self._lengths = collections.deque(maxlen=RETURN_WINDOW)
    self._episodes = self._env_steps = self._dropped = 0
    self._window_lags, self._window_steps = [], 0
    self._window_start = time.perf_counter()

  def publish(self, params: Any, step: int) -> None:
    self._source.publish(params, step)
    self._step = int(step)
    if not self._started:
      self._pool.start(self._source)
      self._started = True

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if not self._started:
      raise RuntimeError('TrajectoryIterator: publish() the parameters before next().')
    parts, count = [], 0
    if self._unrolls_per_batch:
      self._pool.request(self._unrolls_per_batch)
    while count < self._batch_size:
      trajectories, stats = self._pool.get()
      self._account(stats)
      lag = self._step - np.asarray(trajectories['param_version'])
      if self._max_lag >= 0 and np.any(lag > self._max_lag):
        self._dropped += len(lag)
        if self._unrolls_per_batch:
          self._pool.request(1)   # In its place.
        continue
      self._window_lags.extend(lag.tolist())
      parts.append(trajectories)
      count += len(lag)
    batch = jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *parts)
    self.last_batch = batch
    return batch

  def _account(self, stats: UnrollStats) -> None:
    self._env_steps += stats.env_steps
    self._window_steps += stats.env_steps
    self._episodes += len(stats.episode_returns)
    self._returns.extend(stats.episode_returns)
    self._lengths.extend(stats.episode_lengths)

  def metrics(self) -> dict:
    now = time.perf_counter()
    lags = self._window_lags or [0]
    values = {
        'policy_lag_mean': float(np.mean(lags)), 'policy_lag_max': float(np.max(lags)),
        'env_steps_per_s': self._window_steps / max(now - self._window_start, 1e-9),
        'dropped_trajectories': float(self._dropped),
        'actor_restarts': float(self._pool.restarts),
        'episodes': float(self._episodes), 'env_steps': float(self._env_steps),
        'episode_return': float(np.mean(self._returns)) if self._returns else 0.0,
        'episode_length': float(np.mean(self._lengths)) if self._lengths else 0.0}
    self._window_lags, self._window_steps, self._window_start = [], 0, now
    return values

  @property
  def returns(self) -> list:
    """Returns of the last (up to 100) episodes."""
    return list(self._returns)

  def get_state(self) -> Optional[dict]:
    """The iterator's state for an exact resume (inline backend only; else None)."""
    if not hasattr(self._pool, 'get_state'):
      return None
    return {'pool': self._pool.get_state(), 'returns': list(self._returns),
            'lengths': list(self._lengths), 'episodes': self._episodes,
            'env_steps': self._env_steps, 'dropped': self._dropped}

  def set_state(self, state: dict) -> None:
    self._pool.set_state(state['pool'])
    self._returns.extend(state['returns'])
    self._lengths.extend(state['lengths'])
    self._episodes, self._env_steps = state['episodes'], state['env_steps']
    self._dropped = state['dropped']

  def close(self) -> None:
    self._pool.close()
