"""Starting a task's model from released weights (a trained workdir: tasks/workdir.py).

  load_weights(path)              a released DeepMind `*.pystate`, our `.npz` or a
                                  transformers folder (convert) -> (params, state)
  load_checked(path, model)       the same, checked against the model's parameter tree
  start_from(model, path)         the model whose init returns those weights (checked)
"""

import os
from typing import Any, Tuple

import haiku as hk
import jax
import numpy as np

from perceiver_agents import params_io


def is_transformers_dir(path: str) -> bool:
  """A transformers save_pretrained folder (config.json + weights), not a workdir."""
  from perceiver_agents import convert  # pylint: disable=g-import-not-at-top
  return os.path.isdir(path) and convert.is_transformers_dir(path)


def load_weights(path: str) -> Tuple[dict, dict]:
  """(params, state) from a released `.pystate` file, a `params_io.save_params` `.npz`
  or a transformers folder (convert.from_transformers)."""
  if is_transformers_dir(path):
    from perceiver_agents import convert  # pylint: disable=g-import-not-at-top
    converted = convert.from_transformers(path)
    return converted.params, converted.state
  if not os.path.isfile(path):
    raise ValueError(f'{path}: checkpoint file not found.')
  if path.endswith('.npz'):
    params, state = params_io.load_params(path)
  else:
    params, state = params_io.split_params_and_state(params_io.load_deepmind_checkpoint(path))
  return params, state


def _shapes(tree: Any) -> dict:
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): tuple(np.shape(leaf))
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def check_tree(got: Any, want: Any, *, where: str) -> None:
  """Raises ValueError naming the first parameters whose names or shapes differ."""
  got, want = _shapes(got), _shapes(want)
  if got == want:
    return
  missing = sorted(set(want) - set(got))[:3]
  extra = sorted(set(got) - set(want))[:3]
  wrong = [f'{k}: {got[k]} vs model {want[k]}' for k in sorted(set(got) & set(want))
           if got[k] != want[k]][:3]
  raise ValueError(f'{where}: weights do not fit the configured model; missing {missing}, '
                   f'unexpected {extra}, shape mismatches {wrong}. Use the matching '
                   'model.size / variant.')


def load_checked(path: str, model: hk.TransformedWithState) -> Tuple[dict, dict]:
  """`load_weights(path)`, refused unless names and shapes fit `model` (init'ed on None)."""
  params, state = load_weights(path)
  fresh_params, fresh_state = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), None))
  check_tree(params, fresh_params, where=path)
  check_tree(state, fresh_state, where=path)
  return params, state


def start_from(model: hk.TransformedWithState, path: str) -> hk.TransformedWithState:
  """`model` whose init returns the weights in `path` instead of random ones."""
  params, state = load_weights(path)

  def init(rng, *args, **kwargs):
    fresh_params, fresh_state = model.init(rng, *args, **kwargs)
    check_tree(params, fresh_params, where=path)
    check_tree(state, fresh_state, where=path)
    cast = lambda w, f: jax.numpy.asarray(w, f.dtype)
    return (jax.tree.map(cast, params, fresh_params), jax.tree.map(cast, state, fresh_state))

  return hk.TransformedWithState(init=init, apply=model.apply)
