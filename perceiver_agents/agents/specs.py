"""What an agent sees and does: the observation layout and the structured action space.

Observations are dicts of arrays (one environment, no batch axis); every key is optional
but at least one encoder input must be present:

    'entities'     float [N, F]  an entity set (units), padded to N
    'entity_mask'  bool  [N]     True for real entities (required with 'entities')
    'spatial'      float [H, W, C] planes (feature screen, board pixels)
    'scalars'      float [S]     a flat vector
    'action_mask'  bool  [A]     available action types (all available if absent)

Actions are dicts of int32 scalars: 'function' (the action type) and one entry per
argument. Argument kinds:

    'categorical'  a choice among `size` values (flags such as `queued`)
    'point'        a cell of a map, flat index over H * W of the 'spatial' input
    'pointer'      an entity, index over the N entities (masked by 'entity_mask')

Function f uses argument k when `ActionSpec.usage[f, k]`; unused arguments are sampled
but take no part in the log-probability, the entropy or the environment step.
"""

import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np

ENCODER_INPUTS = ('entities', 'spatial', 'scalars')
ARG_KINDS = ('categorical', 'point', 'pointer')


@dataclasses.dataclass(frozen=True)
class ArgSpec:
  """One action argument: its kind and, for 'categorical', its number of values."""
  name: str
  kind: str
  size: int = 0

  def __post_init__(self):
    if self.kind not in ARG_KINDS:
      raise ValueError(f'ArgSpec {self.name!r}: kind must be one of {ARG_KINDS}, '
                       f'got {self.kind!r}.')
    if self.kind == 'categorical' and self.size < 2:
      raise ValueError(f'ArgSpec {self.name!r}: a categorical argument needs size >= 2, '
                       f'got {self.size}.')


@dataclasses.dataclass(frozen=True)
class ActionSpec:
  """`num_functions` action types and the arguments they take.

  Attributes:
    num_functions: A, the number of action types.
    args: the argument specs, in a fixed order (K of them).
    usage: bool [A, K]; usage[f, k] says that function f takes argument k.
    function_names: optional names of the A functions (for logs and errors).
  """
  num_functions: int
  args: Sequence[ArgSpec] = ()
  usage: Optional[np.ndarray] = None
  function_names: Optional[Sequence[str]] = None

  def __post_init__(self):
    if self.num_functions < 1:
      raise ValueError(f'ActionSpec: num_functions must be >= 1, got {self.num_functions}.')
    usage = (np.zeros([self.num_functions, len(self.args)], bool) if self.usage is None
             else np.asarray(self.usage, bool))
    if usage.shape != (self.num_functions, len(self.args)):
      raise ValueError(f'ActionSpec: usage must have shape [num_functions, num_args] = '
                       f'{[self.num_functions, len(self.args)]}, got {list(usage.shape)}.')
    object.__setattr__(self, 'usage', usage)
    names = [a.name for a in self.args]
    if 'function' in names or len(set(names)) != len(names):
      raise ValueError(f'ActionSpec: argument names must be unique and not "function", '
                       f'got {names}.')

  @property
  def keys(self) -> tuple:
    return ('function',) + tuple(a.name for a in self.args)


@dataclasses.dataclass(frozen=True)
class EnvSpec:
  """Shapes and dtypes of one observation (no batch axis) and the action space."""
  observation: Mapping[str, tuple]        # key -> (shape, numpy dtype)
  action: ActionSpec

  def __post_init__(self):
    unknown = set(self.observation) - set(ENCODER_INPUTS) - {'entity_mask', 'action_mask'}
    if unknown:
      raise ValueError(f'EnvSpec: unknown observation keys {sorted(unknown)}; known: '
                       f'{list(ENCODER_INPUTS) + ["entity_mask", "action_mask"]}.')
    if not any(k in self.observation for k in ENCODER_INPUTS):
      raise ValueError(f'EnvSpec: the observation needs one of {ENCODER_INPUTS}.')
    if ('entities' in self.observation) != ('entity_mask' in self.observation):
      raise ValueError("EnvSpec: 'entities' and 'entity_mask' go together.")
    kinds = {a.kind for a in self.action.args}
    if 'pointer' in kinds and 'entities' not in self.observation:
      raise ValueError("EnvSpec: pointer arguments need an 'entities' observation.")
    if 'point' in kinds and 'spatial' not in self.observation:
      raise ValueError("EnvSpec: point arguments need a 'spatial' observation.")
    if 'action_mask' in self.observation:
      shape = tuple(self.observation['action_mask'][0])
      if shape != (self.action.num_functions,):
        raise ValueError(f"EnvSpec: 'action_mask' must have shape "
                         f"[{self.action.num_functions}], got {list(shape)}.")

  def zeros(self) -> dict:
    """An all-zero observation of this spec (entity_mask all False)."""
    return {k: np.zeros(shape, dtype) for k, (shape, dtype) in self.observation.items()}

  def check_observation(self, observation: Mapping[str, np.ndarray], *,
                        where: str = 'observation') -> None:
    """Raises ValueError naming the key whose shape or dtype kind differs from the spec,
    or when no action type is available."""
    missing = set(self.observation) - set(observation)
    extra = set(observation) - set(self.observation)
    if missing or extra:
      raise ValueError(f'{where}: keys {sorted(observation)} do not match the spec '
                       f'{sorted(self.observation)} (missing {sorted(missing)}, '
                       f'unexpected {sorted(extra)}).')
    for key, (shape, dtype) in self.observation.items():
      value = np.asarray(observation[key])
      if value.shape != tuple(shape):
        raise ValueError(f'{where}[{key!r}]: expected shape {list(shape)}, '
                         f'got {list(value.shape)}.')
      if np.dtype(dtype) == np.bool_ and value.dtype != np.bool_:
        raise ValueError(f'{where}[{key!r}]: expected a bool mask, got {value.dtype}.')
      if np.dtype(dtype) != np.bool_ and not np.issubdtype(value.dtype, np.number):
        raise ValueError(f'{where}[{key!r}]: expected numbers, got {value.dtype}.')
      if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
        raise ValueError(f'{where}[{key!r}]: contains NaN or infinity.')
    if 'action_mask' in observation and not np.any(observation['action_mask']):
      raise ValueError(f"{where}['action_mask']: no action type is available; the "
                       'environment must offer at least one (e.g. a no-op).')
