"""The learner's part of every run config, and `--config.a.b=value` overrides.

A task's `get_config()` starts from `default_config()` and adds its own `model` and `data`
sections; the learner reads only the sections defined here.
"""

import ast
import difflib
from typing import Any, Iterable, List

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """Learner settings shared by all tasks; tasks change values, not the layout."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # A named variant of the task's config ('local': small, < 1 minute on 2 cores); its
  # overrides come before the run's own (tasks/base.py: make_config).
  config.preset = ''

  config.train = ml_collections.ConfigDict()
  config.train.steps = 1000             # Loop steps (micro-batches with accumulation).
  config.train.batch_size = 64          # Global batch, split over the `data` mesh axis.
  config.train.compute_dtype = 'float32'  # 'float32' or 'bfloat16' (params stay float32).
  # blocks/ops.py's implementation: 'reference' or 'fast'; None: $PERCEIVER_AGENTS_KERNELS,
  # else 'fast' (perceiver_agents/kernels). Same parameters and values either way.
  config.train.kernels = None
  config.train.log_every = 50
  config.train.progress_bar = True

  config.eval = ml_collections.ConfigDict()
  config.eval.every = 500               # 0: evaluate only at the end.
  config.eval.batch_size = 256

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'adamw'       # 'adam', 'adamw' or 'lamb'.
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = 'cosine'  # 'cosine', 'linear', 'flat_cosine' or 'constant' (after warmup).
  config.optimizer.warmup_steps = 100
  config.optimizer.end_learning_rate_factor = 0.0  # Cosine ends at lr * this.
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 1e-4  # adamw/lamb only; masked, see optim.decay_mask.
  config.optimizer.clip_norm = 1.0      # Global-norm clipping; 0 disables it.
  config.optimizer.accumulate_steps = 1  # Gradient accumulation (optax.MultiSteps).

  config.mesh = ml_collections.ConfigDict()
  config.mesh.fsdp = False              # Shard params and optimizer state over `data`.

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every = 500         # 0: only at the end and on SIGINT/SIGTERM.
  config.checkpoint.keep = 3
  config.checkpoint.async_save = False
  return config


def _leaf_paths(config: ml_collections.ConfigDict, prefix: str = '') -> List[str]:
  paths = []
  for key, value in config.items():
    path = prefix + key
    if isinstance(value, ml_collections.ConfigDict):
      paths.extend(_leaf_paths(value, path + '.'))
    else:
      paths.append(path)
  return paths


def _initials(name: str) -> str:
  return ''.join(word[:1] for word in name.split('_'))


def _close_matches(path: str, known: List[str]) -> List[str]:
  """Known paths that `path` may have meant: same initials ('lr' for 'learning_rate'),
  or spelled alike as a whole or in the last part."""
  section, _, leaf = path.rpartition('.')
  siblings = [k for k in known if k.rpartition('.')[0] == section]
  close = [k for k in siblings if _initials(k.rpartition('.')[2]) == leaf]
  close += difflib.get_close_matches(path, known, n=3, cutoff=0.6)
  by_leaf = {k.rpartition('.')[2]: k for k in known}
  close += [by_leaf[m] for m in difflib.get_close_matches(leaf, by_leaf, n=3, cutoff=0.7)]
  return list(dict.fromkeys(close))[:3]


def _parse_bool(path: str, text: str) -> bool:
  lowered = text.strip().lower()
  if lowered in ('true', '1', 'yes'):
    return True
  if lowered in ('false', '0', 'no'):
    return False
  raise ValueError(f'--config.{path}: expected a bool (true/false), got {text!r}.')


def parse_value(path: str, current: Any, text: str) -> Any:
  """Parses `text` as a value of the same type as `current` (the field's default)."""
  kind = type(current).__name__
  try:
    if isinstance(current, bool):
      return _parse_bool(path, text)
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, str):
      return text
    if isinstance(current, (tuple, list)):
      value = ast.literal_eval(text)
      if not isinstance(value, (tuple, list)):
        raise ValueError(text)
      return type(current)(value)
    if current is None:
      try:
        return ast.literal_eval(text)
      except (ValueError, SyntaxError):
        return text
  except (ValueError, SyntaxError) as e:
    if str(e).startswith('--config.'):
      raise
    raise ValueError(
        f'--config.{path}: expected a value of type {kind}, got {text!r}.') from None
  raise ValueError(f'--config.{path}: fields of type {kind} cannot be overridden.')


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Iterable[str]) -> ml_collections.ConfigDict:
  """Applies 'a.b=value' strings to `config` in place and returns it.

  Raises:
    ValueError: naming the field, for an unknown path (with close matches), a section given
      a value, a missing '=', or a value that does not parse as the field's type.
  """
  known = _leaf_paths(config)
  for item in overrides:
    if '=' not in item:
      raise ValueError(f'--config.{item}: expected --config.FIELD=VALUE.')
    path, text = item.split('=', 1)
    node = config
    keys = path.split('.')
    for depth, key in enumerate(keys):
      is_last = depth == len(keys) - 1
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        close = _close_matches(path, known)
        hint = f' Did you mean: {", ".join(close)}?' if close else ''
        raise ValueError(f'--config.{path}: unknown config field {path!r}.{hint}')
      if is_last:
        current = node[key]
        if isinstance(current, ml_collections.ConfigDict):
          raise ValueError(f'--config.{path}: {path!r} is a section, not a field; '
                           f'set one of its fields, e.g. {_leaf_paths(current, path + ".")[:3]}.')
        node[key] = parse_value(path, current, text)
      else:
        node = node[key]
  return config
