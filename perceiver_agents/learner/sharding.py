"""A device mesh with one `data` axis, and where each array of a run lives on it.

Batches are split over `data`. Parameters and optimizer state are replicated, or with
`fsdp=True` each array is split over `data` along its largest divisible dimension
(arrays with no such dimension, e.g. scalars and biases of odd width, stay replicated).
XLA inserts the gathers and reductions; the update code is the same in every layout.
"""

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh named `data` over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Splits the leading (batch) dimension of every array over `data`."""
  return NamedSharding(mesh, P(DATA_AXIS))


def fsdp_spec(shape: Sequence[int], num_shards: int) -> P:
  """Splits the largest dimension of `shape` divisible by `num_shards`, if any."""
  best = None
  for axis, size in enumerate(shape):
    if size >= num_shards and size % num_shards == 0:
      if best is None or size > shape[best]:
        best = axis
  if best is None or num_shards == 1:
    return P()
  spec = [None] * len(shape)
  spec[best] = DATA_AXIS
  return P(*spec)


def tree_shardings(tree: Any, mesh: Mesh, *, fsdp: bool) -> Any:
  """Shardings for a tree of arrays (or ShapeDtypeStructs): replicated or FSDP-split."""
  num_shards = mesh.shape[DATA_AXIS]
  def sharding(leaf):
    spec = fsdp_spec(leaf.shape, num_shards) if fsdp else P()
    return NamedSharding(mesh, spec)
  return jax.tree.map(sharding, tree)


def global_batch_to_device(batch: Any, mesh: Mesh) -> Any:
  """Places a global host batch on the mesh, split over `data`.

  Every process holds the same global batch (data is a deterministic function of the step);
  each keeps only the rows of its own devices. Single-process this is a plain device_put.

  Args:
    batch: tree of numpy arrays [B, ...], B the global batch size.
  """
  sharding = batch_sharding(mesh)
  num_processes, index = jax.process_count(), jax.process_index()
  def put(x):
    x = np.asarray(x)
    if num_processes == 1:
      return jax.device_put(x, sharding)
    rows = x.shape[0] // num_processes
    local = x[index * rows:(index + 1) * rows]
    return jax.make_array_from_process_local_data(sharding, local, x.shape)
  return jax.tree.map(put, batch)


def local_rows(batch: Any) -> Any:
  """This process's rows of a global host batch [B, ...]: [B / process_count, ...]."""
  num_processes, index = jax.process_count(), jax.process_index()
  if num_processes == 1:
    return batch
  def rows(x):
    x = np.asarray(x)
    n = x.shape[0] // num_processes
    return x[index * n:(index + 1) * n]
  return jax.tree.map(rows, batch)


def local_batch_to_device(batch: Any, mesh: Mesh) -> Any:
  """Places this process's rows [B / process_count, ...] of the global batch on the mesh.

  Each process puts only its own shard (jax.make_array_from_process_local_data); the
  result is the global array [B, ...] split over `data`. Single-process this is a plain
  device_put.
  """
  sharding = batch_sharding(mesh)
  num_processes = jax.process_count()
  def put(x):
    x = np.asarray(x)
    if num_processes == 1:
      return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(
        sharding, x, (x.shape[0] * num_processes,) + x.shape[1:])
  return jax.tree.map(put, batch)
