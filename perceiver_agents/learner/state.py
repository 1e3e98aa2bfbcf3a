"""The training state: everything a run needs to continue exactly where it stopped."""

from typing import Any, NamedTuple

import chex


class TrainState(NamedTuple):
  """Parameters, Haiku state, optimizer state, step counter and base PRNG key.

  Attributes:
    params: Haiku parameters (float32, also when computing in bfloat16).
    state: Haiku state (e.g. batch-norm statistics); an empty dict when unused.
    opt_state: the optax optimizer state for `params`.
    step: int32 [] — number of updates applied so far.
    rng: uint32 [2] — the run's base key. It never changes: the key of step `s` is
      `jax.random.fold_in(rng, s)`, so a resumed run draws the same numbers as an
      uninterrupted one.
  """

  params: Any
  state: Any
  opt_state: Any
  step: chex.Array
  rng: chex.Array
