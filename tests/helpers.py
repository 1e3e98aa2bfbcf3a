"""Small helpers shared by the chex-verified block and adapter tests, and the loading of
the conformance fixtures (tests/fixtures/conformance) shared by the zoo and kernel tests.

Imported by putting tests/ on sys.path (pytest runs with --import-mode=importlib, so
test folders are not packages):

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    import helpers
"""
import json
import pathlib

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chex


def random_params(shapes, seed: int = 1):
  """Random parameters with the shapes (and dtypes) of `shapes`, drawn in numpy.

  Much faster than compiling the modules' truncated-normal initialisers, and no leaf is
  left at a special value (zero bias or offset, unit scale, zero-initialised head) that
  could hide a parameter from the gradient check.
  """
  rng = np.random.RandomState(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    x = rng.randn(*leaf.shape)
    if 'scale' in name:
      x = 1.0 + 0.1 * x
    elif "'w'" in name:
      x = x / np.sqrt(max(1, int(np.prod(leaf.shape[:-1]))))
    else:
      x = 0.1 * x
    return x.astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def init(fn, *args, seed: int = 0, **kwargs):
  """hk.transform(fn) and random params of the right shapes (traced, not compiled)."""
  t = hk.transform(fn)
  shapes = jax.eval_shape(lambda *a: t.init(jax.random.PRNGKey(seed), *a, **kwargs),
                          *args)
  return t, random_params(shapes, seed + 1)


def init_with_state(fn, *args, seed: int = 0, **kwargs):
  """hk.transform_with_state(fn), random params and the real initial state."""
  t = hk.transform_with_state(fn)
  params, state = jax.jit(lambda *a: t.init(jax.random.PRNGKey(seed), *a, **kwargs))(
      *args)
  return t, random_params(params, seed + 1), state


def random_loss(out, seed: int = 7):
  """A scalar of every output with no invariances (sum(out) can be blind to LayerNorm)."""
  leaves = jax.tree_util.tree_leaves(out)
  rng = np.random.RandomState(seed)
  return sum(jnp.sum(x * rng.randn(*x.shape).astype(np.float32)) for x in leaves)


def assert_every_leaf_has_gradient(grads):
  """Every parameter leaf gets a finite gradient that is nonzero somewhere."""
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  assert flat, 'no parameters: the gradient check would be vacuous'
  chex.assert_tree_all_finite(grads)
  dead = [jax.tree_util.keystr(path) for path, g in flat
          if not np.any(np.asarray(g) != 0)]
  assert not dead, f'parameters without gradient: {dead}'


def raises_on_init(fn, *args, match: str):
  """Transforming and initialising `fn(*args)` raises ValueError matching `match`.

  Traced with jax.eval_shape: the checks run at trace time, nothing is compiled.
  """
  t = hk.transform(fn)
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda *a: t.init(jax.random.PRNGKey(0), *a), *args)


def rand(*shape, seed: int = 0):
  return np.random.RandomState(seed).randn(*shape).astype(np.float32)


CONFORMANCE = pathlib.Path(__file__).parent / 'fixtures' / 'conformance'
CONFORMANCE_CASES = json.loads((CONFORMANCE / 'small_cases.json').read_text())


def _two_level(arrays, prefix):
  tree = {}
  for key, value in arrays.items():
    if key.startswith(prefix):
      module, _, name = key[len(prefix):].rpartition('/')
      tree.setdefault(module, {})[name] = value
  return tree


def _inputs(arrays):
  x = {}
  for key, value in arrays.items():
    if key.startswith('inputs/'):
      *outer, last = key.split('/')[1:]
      (x.setdefault(outer[0], {}) if outer else x)[last] = value
  return x


def conformance_case(name: str):
  """(case, params, state, inputs, arrays) of the small conformance case `name`: its
  entry in small_cases.json, the recorded parameter and state trees, the model's keyword
  inputs, and every array of its .npz (outputs included)."""
  arrays = dict(np.load(CONFORMANCE / f'{name}.npz'))
  return (CONFORMANCE_CASES[name], _two_level(arrays, 'params/'),
          _two_level(arrays, 'state/'), _inputs(arrays), arrays)
