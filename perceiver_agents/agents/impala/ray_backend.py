"""The `ray` actor backend: each actor a Ray actor (its own process), anywhere in a cluster.

    one machine:     nothing to do; a local Ray starts with the run (actors.ray_address='')
    several:         `ray start --head` on one, `ray start --address=HEAD:6379` on the
                     others, then train on the head with --config.actors.ray_address=auto

Each Ray actor builds its own environments and jitted policy (on its CPU) from the run's
config. A pump thread in the learner's process hands out unrolls: an idle actor is asked
for one as soon as a credit is free (at most actors.queue_size unrolls ahead of the
learner, backends.UnrollCredits), with the newest computed parameters, which the
learner's process puts into Ray's object store once per version (so an actor fetches them
at the start of its unroll); finished unrolls go into the learner's queue. An actor that
raises, or whose process dies, is replaced by a fresh one (new environments, new process),
logged, up to actors.max_restarts times.

Ray is an optional extra: pip install 'perceiver-agents[distributed]'.
"""

import os
import socket
import threading
from typing import Any, Optional

import jax

from perceiver_agents.agents.impala import backends

IDLE_POLL_S = 0.005   # How often the pump looks for a free credit while an actor idles.

EXTRA_HINT = ("actors.backend='ray' needs Ray, an optional extra: "
              "pip install 'perceiver-agents[distributed]'")


class MissingRayError(ImportError, ValueError):
  """Ray is not installed (a ValueError too: a configuration the install cannot run)."""


def import_ray():
  """The ray module, or one MissingRayError naming the extra to install."""
  try:
    import ray  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise MissingRayError(f'{EXTRA_HINT} ({e}).') from None
  return ray


def check_address(address: str, timeout_s: float = 5.0) -> None:
  """Raises a ValueError unless `address` is '', 'auto' or a reachable HOST:PORT."""
  if address in ('', 'auto'):
    return
  host, sep, port = address.rpartition(':')
  if not sep or not port.isdigit():
    raise ValueError(f"actors.ray_address must be '', 'auto' or HOST:PORT, got "
                     f'{address!r}.')
  try:
    socket.create_connection((host or 'localhost', int(port)), timeout=timeout_s).close()
  except OSError as e:
    raise ValueError(f'actors.ray_address: no Ray head node reachable at {address!r} '
                     f'({e}); start one there with `ray start --head`.') from None


def connect(address: str, *, num_cpus: int) -> bool:
  """Joins (address) or starts (address '') Ray unless this process already has.

  Returns whether this call initialised Ray (then the caller shuts it down).
  """
  ray = import_ray()
  check_address(address)
  if ray.is_initialized():
    return False
  try:
    if address:
      ray.init(address=address, logging_level='WARNING')
    else:
      # 'local': a new Ray of this process's own, even where `ray start` runs one here.
      ray.init(address='local', num_cpus=num_cpus, include_dashboard=False,
               logging_level='WARNING')
  except ConnectionError as e:
    raise ValueError(f'actors.ray_address={address!r}: cannot join a Ray cluster ({e}). '
                     "'auto' needs `ray start --head` (or --address) on this machine "
                     'first.') from None
  return True


class _Worker:
  """The body of one Ray actor: an acting.Actor built in its own process."""

  def __init__(self, actor_builder, actor_id: int, incarnation: int):
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')  # Actors act on their host's CPU.
    self._actor = actor_builder(actor_id, incarnation)
    actor_builder.close_spare()

  def unroll(self, params, version):
    return self._actor.unroll(params, version)

  def location(self) -> dict:
    """Where this actor runs: {'node_id', 'hostname', 'pid'}."""
    import ray  # pylint: disable=g-import-not-at-top
    return {'node_id': ray.get_runtime_context().get_node_id(),
            'hostname': socket.gethostname(), 'pid': os.getpid()}


class RayActors(backends.QueuedActors):
  """`num_actors` Ray actors, at most `queue_size` unrolls ahead of the learner (or,
  `on_demand`, acting only the unrolls the learner asks for); the backends.py API."""

  def __init__(self, actor_builder: Any, *, num_actors: int, queue_size: int,
               max_restarts: int, address: str = '', cpus_per_actor: float = 1.0,
               on_demand: bool = False):
    super().__init__(queue_size=queue_size, max_restarts=max_restarts,
                     on_demand=on_demand)
    self._ray = ray = import_ray()
    self._owns_ray = connect(address, num_cpus=max(os.cpu_count() or 1,
                                                   int(num_actors * cpus_per_actor + 1)))
    self._builder = actor_builder
    self._remote = ray.remote(num_cpus=cpus_per_actor, max_restarts=0)(_Worker)
    self._incarnations = [0] * num_actors
    self._workers = [self._spawn(i) for i in range(num_actors)]
    self._thread: Optional[threading.Thread] = None
    self._params_ref, self._params_version = None, None

  def _spawn(self, actor_id: int):
    return self._remote.remote(self._builder, actor_id, self._incarnations[actor_id])

  def actor_locations(self) -> list:
    """Where the current Ray actors run, one `_Worker.location` dict each (waits for
    each to be up)."""
    return self._ray.get([w.location.remote() for w in self._workers])

  def actor_pids(self) -> list:
    """The process ids of the current Ray actors (waits for each to be up)."""
    return [where['pid'] for where in self.actor_locations()]

  def start(self, source: backends.ParameterSource) -> None:
    self._thread = threading.Thread(target=self._pump, args=(source,), daemon=True,
                                    name='impala-ray-pump')
    self._thread.start()

  def _submit(self, actor_id: int, source, inflight: dict) -> bool:
    params, version = source.latest(self._stop, newest=self._credits.on_demand)
    if params is None:
      return False
    if version != self._params_version:
      self._params_ref = self._ray.put(jax.device_get(params))
      self._params_version = version
    ref = self._workers[actor_id].unroll.remote(self._params_ref, version)
    inflight[ref] = actor_id
    return True

  def _log_placement(self) -> None:
    nodes = {}
    for i, where in enumerate(self.actor_locations()):
      nodes.setdefault((where['hostname'], where['node_id'][:8]), []).append(i)
    backends.log.info('%d Ray actors on %d node(s): %s', len(self._workers), len(nodes),
                      '; '.join(f'{host} (node {node}): actors {ids}'
                                for (host, node), ids in nodes.items()))

  def _pump(self, source) -> None:
    ray, inflight, idle = self._ray, {}, list(range(len(self._workers)))
    try:
      self._log_placement()
      while not self._stop.is_set():
        # Idle actors start an unroll as soon as a credit is free; with nothing in
        # flight there is nothing else to wait for.
        while idle and self._credits.take(self._stop, block=not inflight):
          if not self._submit(idle.pop(0), source, inflight):
            return
        if not inflight:
          continue
        ready, _ = ray.wait(list(inflight), num_returns=1,
                            timeout=IDLE_POLL_S if idle else backends.POLL_S)
        for ref in ready:
          i = inflight.pop(ref)
          idle.append(i)
          try:
            item = ray.get(ref)
          except Exception as e:  # pylint: disable=broad-except
            if self._stop.is_set():
              return
            self._credits.give()   # This unroll produced nothing.
            if not self._restarts.allow(i, e):
              self._queue.put(backends.FailedActor(i, e))
              return
            ray.kill(self._workers[i], no_restart=True)
            self._incarnations[i] += 1
            self._workers[i] = self._spawn(i)
          else:
            self._queue.put(item)
    except Exception as e:  # pylint: disable=broad-except
      if not self._stop.is_set():
        self._queue.put(backends.FailedActor(-1, e))

  def _stopped(self) -> Optional[str]:
    if self._thread is not None and not self._thread.is_alive():
      return 'the Ray actors pump has stopped.'
    return None

  def close(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=30)
    for worker in self._workers:
      try:
        self._ray.kill(worker, no_restart=True)
      except Exception:  # pylint: disable=broad-except
        pass  # Already gone.
    if self._owns_ray:
      self._ray.shutdown()
