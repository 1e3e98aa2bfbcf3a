"""Optimizers, learning-rate schedules, weight-decay masks and gradient accumulation."""

from typing import Any, Sequence

import jax
import ml_collections
import optax

# Parameters whose path contains one of these are never decayed, nor is any parameter
# with fewer than two dimensions (biases, layer-norm scales and offsets).
NO_DECAY_PATTERNS = ('pos_emb', 'position', 'layer_norm', 'layernorm')


def make_schedule(*, learning_rate: float, schedule: str, warmup_steps: int,
                  total_steps: int, end_learning_rate_factor: float = 0.0) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate`, then constant, cosine decay, linear decay
  ('linear', as PPO's usual annealing), or flat for half the remaining steps and cosine
  decay over the other half ('flat_cosine'); the decays end at
  `end_learning_rate_factor` x `learning_rate`.

  `total_steps` counts optimizer updates (loop steps / accumulate_steps).
  """
  if learning_rate <= 0:
    raise ValueError(f'optimizer.learning_rate must be > 0, got {learning_rate}.')
  if warmup_steps < 0:
    raise ValueError(f'optimizer.warmup_steps must be >= 0, got {warmup_steps}.')
  if schedule == 'constant':
    main = optax.constant_schedule(learning_rate)
  elif schedule == 'cosine':
    main = optax.cosine_decay_schedule(
        init_value=learning_rate, decay_steps=max(1, total_steps - warmup_steps),
        alpha=end_learning_rate_factor)
  elif schedule == 'linear':
    main = optax.linear_schedule(
        init_value=learning_rate, end_value=learning_rate * end_learning_rate_factor,
        transition_steps=max(1, total_steps - warmup_steps))
  elif schedule == 'flat_cosine':  # Flat for half the steps, then cosine (Perceiver IO).
    flat = max(1, (total_steps - warmup_steps) // 2)
    main = optax.join_schedules([
        optax.constant_schedule(learning_rate),
        optax.cosine_decay_schedule(
            init_value=learning_rate, decay_steps=max(1, total_steps - warmup_steps - flat),
            alpha=end_learning_rate_factor)], boundaries=[flat])
  else:
    raise ValueError(f"optimizer.schedule must be 'cosine', 'linear', 'flat_cosine' or "
                     f"'constant', got {schedule!r}.")
  if warmup_steps == 0:
    return main
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, main], boundaries=[warmup_steps])


def decay_mask(params: Any, patterns: Sequence[str] = NO_DECAY_PATTERNS) -> Any:
  """True for the parameters that take weight decay.

  No decay for biases, layer-norm scales/offsets (ndim < 2) and for any parameter whose
  'module/name' path contains one of `patterns` (position embeddings, layer norms).
  """
  def decays(path, leaf) -> bool:
    name = '/'.join(str(getattr(k, 'key', k)) for k in path).lower()
    return leaf.ndim >= 2 and not any(p in name for p in patterns)
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(config: ml_collections.ConfigDict, *,
                   total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the optimizer described by `config.optimizer`.

  Args:
    config: the run config (its `optimizer` section is read).
    total_steps: loop steps of the run (`train.steps`).

  Returns:
    (optimizer, schedule); the schedule maps optimizer-update counts to learning rates.
  """
  opt = config.optimizer
  accumulate = opt.accumulate_steps
  if accumulate < 1:
    raise ValueError(f'optimizer.accumulate_steps must be >= 1, got {accumulate}.')
  if opt.clip_norm < 0:
    raise ValueError(f'optimizer.clip_norm must be >= 0 (0 disables), got {opt.clip_norm}.')
  schedule = make_schedule(
      learning_rate=opt.learning_rate, schedule=opt.schedule,
      warmup_steps=opt.warmup_steps, total_steps=max(1, total_steps // accumulate),
      end_learning_rate_factor=opt.end_learning_rate_factor)
  if opt.name == 'adam':
    core = optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps)
  elif opt.name == 'adamw':
    core = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                       weight_decay=opt.weight_decay, mask=decay_mask)
  elif opt.name == 'lamb':
    core = optax.lamb(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                      weight_decay=opt.weight_decay, mask=decay_mask)
  else:
    raise ValueError(f"optimizer.name must be 'adam', 'adamw' or 'lamb', got {opt.name!r}.")
  chain = [optax.clip_by_global_norm(opt.clip_norm)] if opt.clip_norm > 0 else []
  optimizer = optax.chain(*chain, core)
  if accumulate > 1:
    optimizer = optax.MultiSteps(optimizer, every_k_schedule=accumulate).gradient_transformation()
  return optimizer, schedule
