"""Reading and writing parameter files.

Two formats:

* DeepMind's released Perceiver IO checkpoints (``*.pystate``): pickles of nested dicts of
  numpy arrays; the ImageNet files hold ``{'params': ..., 'state': ...}``, the others the
  params alone. A pickle can name any Python callable and have it run while loading, so
  :func:`load_deepmind_checkpoint` uses an unpickler that resolves only the few names a
  numpy array needs and refuses every other name before anything from the file runs.

* The project's own format (:func:`save_params` / :func:`load_params`): one ``.npz`` file,
  no pickle anywhere, keys ``params/<module>/<name>`` and ``state/<module>/<name>`` -- the
  same layout as the conformance vectors in shared/conformance. ``<module>`` is a Haiku
  module path and may itself contain ``/``; ``<name>`` never does.

Trees are Haiku's two-level mappings ``{module_path: {param_name: array}}``, returned as
plain ``dict``s of ``np.ndarray`` (move them to devices with ``jax.device_put``).
"""

from __future__ import annotations

import collections
import importlib
import os
import pickle
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any, Mapping, NamedTuple

import numpy as np

# A nested mapping whose leaves are arrays; for Haiku, {module_path: {name: array}}.
Tree = dict[str, Any]

# Leaves must be numbers: bool, signed/unsigned int, float, complex. This excludes object
# arrays (which would carry Python objects) and dtypes that .npz cannot describe (e.g.
# ml_dtypes.bfloat16, which np.save writes as raw void bytes).
_NUMERIC_KINDS = frozenset('biufc')


class ParamsAndState(NamedTuple):
  """A Haiku params tree and its state tree (``{}`` for models without state)."""

  params: Tree
  state: Tree


# --------------------------------------------------------------------------------------
# DeepMind checkpoints (restricted pickle)
# --------------------------------------------------------------------------------------


class RefusedPickle(ValueError):
  """The pickle asked for something outside the allow-list; nothing of it ran."""


def _numpy_private(module: str) -> Any:
  """numpy's private ``_core.<module>`` (named ``core.<module>`` before numpy 1.26)."""
  try:
    return importlib.import_module(f'numpy._core.{module}')
  except ImportError:
    return importlib.import_module(f'numpy.core.{module}')


def _latin1_encode(text: str, encoding: str = 'latin1') -> bytes:
  """Stands in for ``_codecs.encode``, admitting only what pickle protocols 0-2 use."""
  if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
    raise RefusedPickle(f'the file calls _codecs.encode with {encoding!r}; only '
                         "'latin1' (how protocol-2 pickles store bytes) is allowed.")
  return text.encode('latin1')


def _allowed_globals() -> dict[tuple[str, str], Any]:
  """The only (module, name) pairs a checkpoint pickle may refer to, and their objects.

  Objects are looked up here, never imported by a name taken from the file. Both
  spellings of numpy's private module are listed: pickles written under numpy 1.x say
  ``numpy.core``, under numpy 2.x ``numpy._core``.
  """
  multiarray = _numpy_private('multiarray')
  numeric = _numpy_private('numeric')
  allowed: dict[tuple[str, str], Any] = {
      ('numpy', 'ndarray'): np.ndarray,
      ('numpy', 'dtype'): np.dtype,
      ('collections', 'OrderedDict'): collections.OrderedDict,
      # Pickle protocols 0-2 written by Python 3 store bytes (an array's raw data) as
      # _codecs.encode(text, 'latin1'); only that exact, side-effect-free use is admitted.
      ('_codecs', 'encode'): _latin1_encode,
  }
  for package in ('numpy.core', 'numpy._core'):
    # ndarray.__reduce__ (pickle protocols 0-4): _reconstruct + ndarray.__setstate__.
    allowed[(f'{package}.multiarray', '_reconstruct')] = multiarray._reconstruct
    # numpy scalars such as np.float32(1.0).
    allowed[(f'{package}.multiarray', 'scalar')] = multiarray.scalar
    # ndarray.__reduce_ex__(5) (pickle protocol 5): an array from its byte buffer.
    allowed[(f'{package}.numeric', '_frombuffer')] = numeric._frombuffer
  return allowed


_ALLOWED_GLOBALS = _allowed_globals()


class AllowlistUnpickler(pickle.Unpickler):
  """Unpickler that resolves only the (module, name) pairs of `ALLOWED`.

  Every GLOBAL / STACK_GLOBAL / INST / OBJ / EXT opcode comes through `find_class`, and a
  pickle cannot call anything it did not first obtain there: refusing then stops the
  file before any of its code runs. Subclasses set `ALLOWED` and `HOLDS` (what such a
  file holds, for the message).
  """
  ALLOWED: Mapping[tuple[str, str], Any] = {}
  HOLDS = 'this kind of file'

  def find_class(self, module: str, name: str) -> Any:
    try:
      return self.ALLOWED[(module, name)]
    except KeyError:
      raise RefusedPickle(
          f'the file asks for {module}.{name}, which {self.HOLDS} never needs; refusing '
          'to load it (a pickle can run arbitrary code while loading). Nothing from the '
          'file was executed.') from None


class _ArraysOnlyUnpickler(AllowlistUnpickler):
  """Resolves only the names numpy arrays, dtypes and scalars need."""
  ALLOWED = _ALLOWED_GLOBALS
  HOLDS = 'a checkpoint of numpy arrays'

  def persistent_load(self, pid: Any) -> Any:
    raise RefusedPickle(f'the file uses a pickle persistent id ({pid!r}), which a '
                         'checkpoint of numpy arrays never needs.')


def load_deepmind_checkpoint(path: str | os.PathLike[str]) -> Tree:
  """Reads one of DeepMind's released Perceiver IO checkpoint files (``*.pystate``).

  Args:
    path: the pickle file, e.g. ``imagenet_conv_preprocessing.pystate``.

  Returns:
    The pickled tree as plain nested ``dict``s of ``np.ndarray`` (``OrderedDict`` and
    numpy scalars are converted). For files holding ``{'params': ..., 'state': ...}``,
    pass the result to :func:`split_params_and_state`.

  Raises:
    ValueError: the file refers to anything but numpy arrays / dtypes / scalars and
      ``OrderedDict`` (refused before it can run), is truncated or not a pickle, or
      does not hold a nested mapping of numeric arrays.
    OSError: the file cannot be opened.
  """
  path_str = os.fspath(path)
  with open(path_str, 'rb') as f:
    try:
      tree = _ArraysOnlyUnpickler(f).load()
    except RefusedPickle as e:
      raise ValueError(f'load_deepmind_checkpoint(path={path_str!r}): {e}') from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError, MemoryError, UnicodeDecodeError) as e:
      raise ValueError(
          f'load_deepmind_checkpoint(path={path_str!r}): not a readable pickle of numpy '
          f'arrays (truncated or corrupt?): {type(e).__name__}: {e}') from e
    # Anything after the pickle's STOP opcode means this is not one complete pickle.
    if f.read(1):
      raise ValueError(
          f'load_deepmind_checkpoint(path={path_str!r}): unexpected bytes after the end '
          'of the pickle; the file is corrupt or not a single checkpoint.')
  return _as_plain_tree(tree, where=f'load_deepmind_checkpoint(path={path_str!r})')


def split_params_and_state(tree: Mapping[str, Any]) -> ParamsAndState:
  """Splits a checkpoint tree into Haiku ``params`` and ``state``.

  Accepts both layouts DeepMind released: ``{'params': P, 'state': S}`` (or just
  ``{'params': P}``), and a bare params tree ``P``. They are told apart by structure, not
  by key alone: in a bare Haiku tree every value is ``{name: array}``, whereas a wrapped
  ``'params'`` entry is ``{module: {name: array}}``.

  Args:
    tree: the result of :func:`load_deepmind_checkpoint` (or any such mapping).

  Returns:
    ``ParamsAndState(params, state)``; ``state`` is ``{}`` when the tree has none.
  """
  if not isinstance(tree, Mapping):
    raise ValueError(f'split_params_and_state(tree=...): expected a mapping, got '
                     f'{type(tree).__name__}.')
  keys = set(tree)
  wrapped = ('params' in keys and keys <= {'params', 'state'}
             and all(_is_two_level(tree[k]) for k in keys))
  if wrapped:
    return ParamsAndState(params=dict(tree['params']), state=dict(tree.get('state', {})))
  return ParamsAndState(params=dict(tree), state={})


def _is_two_level(tree: Any) -> bool:
  """True for {str: {str: array}} (a Haiku params/state tree)."""
  return isinstance(tree, Mapping) and all(
      isinstance(module, Mapping) and all(_is_array(v) for v in module.values())
      for module in tree.values())


def _is_array(leaf: Any) -> bool:
  return isinstance(leaf, (np.ndarray, np.generic))


def _as_plain_tree(tree: Any, *, where: str, keypath: str = '') -> Tree:
  """Copies a nested mapping of numeric arrays into plain dicts, checking every leaf."""
  if not isinstance(tree, Mapping):
    raise ValueError(f'{where}: expected a nested mapping of arrays, but '
                     f'{keypath or "the top level"} is a {type(tree).__name__}.')
  if not keypath and not tree:
    raise ValueError(f'{where}: the tree is empty; it holds no arrays.')
  out: Tree = {}
  for key, value in tree.items():
    if not isinstance(key, str):
      raise ValueError(f'{where}: keys must be strings, got {key!r} under '
                       f'{keypath or "the top level"}.')
    child = f'{keypath}/{key}' if keypath else key
    if isinstance(value, Mapping):
      out[key] = _as_plain_tree(value, where=where, keypath=child)
    else:
      out[key] = _as_numeric_array(value, where=where, keypath=child)
  return out


def _as_numeric_array(leaf: Any, *, where: str, keypath: str) -> np.ndarray:
  """Returns ``leaf`` as an ndarray if it is a numeric numpy array/scalar, else raises."""
  if not _is_array(leaf):
    raise ValueError(f'{where}: leaf {keypath!r} is a {type(leaf).__name__}, expected a '
                     'numpy array.')
  array = np.asarray(leaf)
  if array.dtype.kind not in _NUMERIC_KINDS:
    raise ValueError(f'{where}: leaf {keypath!r} has dtype {array.dtype}; expected bool, '
                     'int, uint, float or complex.')
  return array


# --------------------------------------------------------------------------------------
# The project's own format: .npz, no pickle
# --------------------------------------------------------------------------------------

_SECTIONS = ('params', 'state')


def save_params(path: str | os.PathLike[str], params: Mapping[str, Mapping[str, Any]], *,
                state: Mapping[str, Mapping[str, Any]] | None = None) -> None:
  """Writes Haiku ``params`` (and ``state``) to one ``.npz`` file, atomically.

  The file appears complete or not at all: it is written to a temporary file in the same
  directory, flushed to disk, then renamed over ``path``. ``path`` is used exactly as
  given (numpy's habit of appending ``.npz`` does not apply).

  Args:
    path: the file to write; its directory must exist.
    params: ``{module_path: {param_name: array}}``; numpy or JAX arrays (copied to host).
    state: optional tree of the same shape, e.g. batch-norm statistics.

  Raises:
    ValueError: a tree is not two-level, a name contains ``/``, or a leaf is not a
      numeric array (object arrays and bfloat16 cannot be stored; cast to float32).
  """
  path_str = os.fspath(path)
  arrays = {**_flatten_two_level(params, section='params'),
            **_flatten_two_level(state or {}, section='state')}

  directory = os.path.dirname(os.path.abspath(path_str))
  if not os.path.isdir(directory):
    raise ValueError(f'save_params(path={path_str!r}): directory {directory!r} does not '
                     'exist.')
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path_str)}.',
                             suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, allow_pickle=False, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path_str)
  except BaseException:
    # Never leave a half-written temporary file behind.
    try:
      os.unlink(tmp)
    except FileNotFoundError:
      pass
    raise
  _fsync_directory(directory)


def load_params(path: str | os.PathLike[str]) -> ParamsAndState:
  """Reads a file written by :func:`save_params`.

  Args:
    path: the ``.npz`` file.

  Returns:
    ``ParamsAndState(params, state)`` as ``{module_path: {param_name: np.ndarray}}``;
    ``state`` is ``{}`` when none was saved. Unpack with ``params, state = ...``.

  Raises:
    ValueError: the file is not a readable ``.npz``, holds object (pickled) arrays, or
      has keys other than ``params/<module>/<name>`` / ``state/<module>/<name>``.
    OSError: the file cannot be opened.
  """
  path_str = os.fspath(path)
  where = f'load_params(path={path_str!r})'
  # The file is opened here, not by np.load, so that it is closed on every error path.
  with open(path_str, 'rb') as f:
    try:
      # allow_pickle=False: a pickled file or an object array raises instead of unpickling.
      loaded = np.load(f, allow_pickle=False)
      if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError('it holds a single .npy array, not an .npz written by save_params')
      with loaded:
        raw = {key: loaded[key] for key in loaded.files}
    except (zipfile.BadZipFile, EOFError, ValueError, zlib.error) as e:
      raise ValueError(f'{where}: not a readable .npz of plain arrays (pickled data and '
                       f'object arrays are refused): {type(e).__name__}: {e}') from e

  trees: dict[str, Tree] = {section: {} for section in _SECTIONS}
  for key, array in raw.items():
    section, module, name = _split_key(key, where=where)
    trees[section].setdefault(module, {})[name] = _as_numeric_array(
        array, where=where, keypath=key)
  if not trees['params']:
    raise ValueError(f'{where}: the file holds no params/<module>/<name> arrays.')
  return ParamsAndState(params=trees['params'], state=trees['state'])


def _flatten_two_level(tree: Any, *, section: str) -> dict[str, np.ndarray]:
  """{module: {name: array}} -> {'<section>/<module>/<name>': ndarray}, checked."""
  where = f'save_params({section}=...)'
  if not isinstance(tree, Mapping):
    raise ValueError(f'{where}: expected {{module_path: {{param_name: array}}}}, got '
                     f'{type(tree).__name__}.')
  flat: dict[str, np.ndarray] = {}
  for module, leaves in tree.items():
    if not isinstance(module, str) or not module:
      raise ValueError(f'{where}: module paths must be non-empty strings, got {module!r}.')
    if not isinstance(leaves, Mapping) or not leaves:
      raise ValueError(f'{where}: module {module!r} must map to a non-empty '
                       f'{{param_name: array}} dict, got {type(leaves).__name__} '
                       f'{leaves!r:.60}.')
    for name, leaf in leaves.items():
      if not isinstance(name, str) or not name or '/' in name:
        raise ValueError(f'{where}: parameter names must be non-empty strings without '
                         f"'/', got {name!r} in module {module!r}.")
      key = f'{section}/{module}/{name}'
      if hasattr(leaf, '__array__') and not _is_array(leaf):
        leaf = np.asarray(leaf)  # a jax.Array: copy to host
      flat[key] = _as_numeric_array(leaf, where=where, keypath=f'{module}/{name}')
  return flat


def _split_key(key: str, *, where: str) -> tuple[str, str, str]:
  """'params/a/~/b/w' -> ('params', 'a/~/b', 'w')."""
  section, _, rest = key.partition('/')
  module, _, name = rest.rpartition('/')
  if section not in _SECTIONS or not module or not name:
    raise ValueError(f"{where}: key {key!r} is not 'params/<module>/<name>' or "
                     "'state/<module>/<name>'.")
  return section, module, name


def _fsync_directory(directory: str) -> None:
  """Makes the rename durable (POSIX); a no-op where directories cannot be opened."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)
