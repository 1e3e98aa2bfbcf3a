"""Reading PyTorch `pytorch_model.bin` files without torch and without running them.

A `torch.save` file is a zip archive: `<prefix>/data.pkl`, a pickle of the state dict whose
tensors point (pickle "persistent ids") at raw storages `<prefix>/data/<key>`. A pickle
can call anything it names, so it is read with an unpickler that resolves only

  collections.OrderedDict                       (the state dict, empty backward hooks)
  torch._utils._rebuild_tensor_v2 / _rebuild_parameter   (a tensor: storage, offset,
                                                 size, stride)
  torch.<Dtype>Storage                          (the storage types, as dtype tags)

each replaced here by a numpy stand-in, the same promise as params_io's loader of
DeepMind's pickles: a file that names anything else is refused before any of it runs.

  load_pytorch_bin(path) -> {name: np.ndarray}
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from typing import Any, NamedTuple

import numpy as np

from perceiver_agents import params_io

try:  # jax's dependency; gives bfloat16 storages a numpy dtype.
  import ml_dtypes
  _BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
  _BFLOAT16 = None


_Refused = params_io.RefusedPickle


class _StorageType(NamedTuple):
  """Stands in for torch.<Name>Storage: only its element dtype matters."""
  name: str
  dtype: np.dtype


class _Storage(NamedTuple):
  """A storage's raw elements (a read-only 1-D array)."""
  data: np.ndarray


_STORAGE_DTYPES = {
    'DoubleStorage': np.dtype('<f8'), 'FloatStorage': np.dtype('<f4'),
    'HalfStorage': np.dtype('<f2'), 'LongStorage': np.dtype('<i8'),
    'IntStorage': np.dtype('<i4'), 'ShortStorage': np.dtype('<i2'),
    'CharStorage': np.dtype('i1'), 'ByteStorage': np.dtype('u1'),
    'BoolStorage': np.dtype('?'),
}
if _BFLOAT16 is not None:
  _STORAGE_DTYPES['BFloat16Storage'] = _BFLOAT16


def _rebuild_tensor_v2(storage: _Storage, storage_offset: int, size: tuple,
                       stride: tuple, requires_grad: bool = False,
                       backward_hooks: Any = None, metadata: Any = None) -> np.ndarray:
  """A numpy copy of storage[offset :] viewed with `size` and `stride` (in elements)."""
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, _Storage):
    raise _Refused('a tensor is built from something that is not a storage.')
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if len(size) != len(stride) or min(size + stride + (storage_offset,), default=0) < 0:
    raise _Refused(f'a tensor has an invalid layout (size {size}, stride {stride}, '
                   f'offset {storage_offset}).')
  data = storage.data
  if 0 in size:
    return np.zeros(size, data.dtype)
  last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= data.size:
    raise _Refused(f'a tensor of size {size} (stride {stride}, offset '
                   f'{storage_offset}) reaches past its storage of {data.size} elements.')
  view = np.lib.stride_tricks.as_strided(
      data[storage_offset:], shape=size,
      strides=tuple(s * data.itemsize for s in stride), writeable=False)
  return np.array(view)


def _rebuild_parameter(data: Any, requires_grad: bool = False,
                       backward_hooks: Any = None) -> np.ndarray:
  del requires_grad, backward_hooks
  if not isinstance(data, np.ndarray):
    raise _Refused('a parameter wraps something that is not a tensor.')
  return data


def _allowed() -> dict[tuple[str, str], Any]:
  allowed: dict[tuple[str, str], Any] = {
      ('collections', 'OrderedDict'): collections.OrderedDict,
      ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
      ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
  }
  for name, dtype in _STORAGE_DTYPES.items():
    allowed[('torch', name)] = _StorageType(name, dtype)
  return allowed


_ALLOWED = _allowed()


class _TensorsOnlyUnpickler(params_io.AllowlistUnpickler):
  """Resolves only the names a state dict of tensors needs; storages come from `read`."""
  ALLOWED = _ALLOWED
  HOLDS = 'a state dict of tensors'

  def __init__(self, file, read_storage):
    super().__init__(file)
    self._read_storage = read_storage
    self._storages: dict[str, _Storage] = {}

  def persistent_load(self, pid: Any) -> _Storage:
    if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != 'storage'
        or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)):
      raise _Refused(f'unexpected persistent id {pid!r:.100} (expected a storage).')
    _, storage_type, key, _, numel = pid
    if key not in self._storages:
      raw = self._read_storage(key)
      count = len(raw) // storage_type.dtype.itemsize
      if count < int(numel):
        raise _Refused(f'storage {key} holds {count} elements, the file says {numel}.')
      self._storages[key] = _Storage(
          np.frombuffer(raw, storage_type.dtype, count=int(numel)))
    return self._storages[key]


def load_pytorch_bin(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """{name: array} of a `torch.save`d state dict (zip format, torch >= 1.6).

  Raises:
    ValueError: naming the file, when it is not a zip-format torch file, refers to
      anything but tensors, storages and OrderedDict (refused before it can run), or
      is truncated or inconsistent.
  """
  path_str = os.fspath(path)
  where = f'{path_str}'
  try:
    archive = zipfile.ZipFile(path_str)
  except zipfile.BadZipFile:
    raise ValueError(f'{where}: not a zip-format PyTorch file (the legacy pre-1.6 '
                     'format and truncated files cannot be read; re-save it with '
                     'save_pretrained).') from None
  with archive:
    pickles = [n for n in archive.namelist() if n.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise ValueError(f'{where}: expected one <prefix>/data.pkl in the archive, found '
                       f'{pickles}.')
    prefix = pickles[0][:-len('data.pkl')]

    def read_storage(key: str) -> bytes:
      try:
        return archive.read(f'{prefix}data/{key}')
      except KeyError:
        raise _Refused(f'storage {key} is missing from the archive.') from None

    try:
      with archive.open(pickles[0]) as f:
        tree = _TensorsOnlyUnpickler(f, read_storage).load()
    except _Refused as e:
      raise ValueError(f'{where}: {e}') from None
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError, UnicodeDecodeError, zipfile.BadZipFile,
            ValueError) as e:
      raise ValueError(f'{where}: not a readable PyTorch state dict (truncated or '
                       f'corrupt?): {type(e).__name__}: {e}') from None
  if not isinstance(tree, dict) or not all(
      isinstance(k, str) and isinstance(v, np.ndarray) for k, v in tree.items()):
    raise ValueError(f'{where}: expected a flat state dict {{name: tensor}}, got a '
                     f'{type(tree).__name__}.')
  return dict(tree)
