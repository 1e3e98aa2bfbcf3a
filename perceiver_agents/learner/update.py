"""Pure functions of one run: initialise, update, evaluate. The loop jit-compiles them.

Shape letters: B batch (global), and whatever a task's batch holds after it.
A task's `loss(outputs, batch)` returns per-example losses [B] and its
`metrics(outputs, batch)` a dict of per-example values [B]; means are taken here.
"""

from typing import Any, Callable, Mapping, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from perceiver_agents import kernels as kernels_lib
from perceiver_agents.learner.state import TrainState

COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_dtype(name: str) -> jnp.dtype:
  if name not in COMPUTE_DTYPES:
    raise ValueError(
        f'train.compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, got {name!r}.')
  return COMPUTE_DTYPES[name]


def cast_floating(tree: Any, dtype: jnp.dtype) -> Any:
  """Casts the floating-point leaves of `tree` to `dtype`; others are left alone."""
  def cast(x):
    return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return jax.tree.map(cast, tree)


def with_kernels(model: hk.TransformedWithState,
                 kernels: Optional[str]) -> hk.TransformedWithState:
  """`model` whose init and apply trace blocks/ops.py's `kernels` implementation
  ('reference' or 'fast'); None leaves the choice to $PERCEIVER_AGENTS_KERNELS."""
  if kernels is None:
    return model
  kernels_lib.check(kernels, name='train.kernels')

  def init(*args, **kwargs):
    with kernels_lib.use(kernels):
      return model.init(*args, **kwargs)

  def apply(*args, **kwargs):
    with kernels_lib.use(kernels):
      return model.apply(*args, **kwargs)

  return hk.TransformedWithState(init, apply)


def make_init_fn(model: hk.TransformedWithState,
                 optimizer: optax.GradientTransformation) -> Callable[..., TrainState]:
  """init(rng uint32[2], batch) -> TrainState at step 0, whose base key is split from rng."""
  def init(rng: jax.Array, batch: Mapping[str, jax.Array]) -> TrainState:
    init_rng, run_rng = jax.random.split(rng)
    params, state = model.init(init_rng, batch, is_training=True)
    return TrainState(params=params, state=state, opt_state=optimizer.init(params),
                      step=jnp.zeros([], jnp.int32), rng=run_rng)
  return init


def _forward(model, loss_fn, metrics_fn, dtype, params, state, rng, batch, is_training):
  """Runs the model in `dtype`; returns (per-example loss [B] f32, metrics, new state)."""
  outputs, new_state = model.apply(cast_floating(params, dtype), state, rng,
                                   cast_floating(batch, dtype), is_training=is_training)
  outputs = cast_floating(outputs, jnp.float32)
  losses = loss_fn(outputs, batch).astype(jnp.float32)
  if losses.ndim != 1:
    raise ValueError(f'task loss: expected per-example losses [B], got shape {losses.shape}.')
  return losses, metrics_fn(outputs, batch), new_state


def make_update_fn(model: hk.TransformedWithState, loss_fn: Callable, metrics_fn: Callable,
                   optimizer: optax.GradientTransformation, *,
                   dtype: jnp.dtype = jnp.float32) -> Callable:
  """update(train_state, batch) -> (train_state, scalars), one optimizer (micro-)step.

  The step's PRNG key is fold_in(train_state.rng, train_state.step). Scalars: 'loss',
  'grad_norm' and the batch means of the task's metrics.
  """
  def loss_and_aux(params, state, rng, batch):
    losses, metrics, new_state = _forward(model, loss_fn, metrics_fn, dtype,
                                          params, state, rng, batch, True)
    return jnp.mean(losses), (metrics, new_state)

  def update(ts: TrainState, batch: Mapping[str, jax.Array]):
    rng = jax.random.fold_in(ts.rng, ts.step)
    (loss, (metrics, state)), grads = jax.value_and_grad(loss_and_aux, has_aux=True)(
        ts.params, ts.state, rng, batch)
    updates, opt_state = optimizer.update(grads, ts.opt_state, ts.params)
    params = optax.apply_updates(ts.params, updates)
    scalars = {'loss': loss, 'grad_norm': optax.tree.norm(grads)}
    scalars.update({k: jnp.mean(v.astype(jnp.float32)) for k, v in metrics.items()})
    return TrainState(params, state, opt_state, ts.step + 1, ts.rng), scalars
  return update


def make_eval_fn(model: hk.TransformedWithState, loss_fn: Callable, metrics_fn: Callable, *,
                 dtype: jnp.dtype = jnp.float32) -> Callable:
  """eval(params, state, batch, mask bool[B]) -> sums of 'loss' and metrics over mask, and
  'count'."""
  def evaluate(params, state, batch, mask):
    losses, metrics, _ = _forward(model, loss_fn, metrics_fn, dtype, params, state,
                                  jax.random.PRNGKey(0), batch, False)
    weights = mask.astype(jnp.float32)
    sums = {'loss': jnp.sum(losses * weights)}
    sums.update({k: jnp.sum(v.astype(jnp.float32) * weights) for k, v in metrics.items()})
    sums['count'] = jnp.sum(weights)
    return sums
  return evaluate
