"""The two losses of the Anakin loop: PPO with GAE (as JaxMARL's IPPO) and V-trace.

Shape letters: T time steps, E environments (a minibatch of them), A agents, K actions.
A trajectory (`Trajectory`, time-major) holds what acting recorded; `agent_mask` marks
real agents (padding slots of a map mixture take no part in any mean).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import rlax

LOSSES = ('ppo', 'vtrace')


class Trajectory(NamedTuple):
  obs: Any               # {key: [T, E, ...]}, the observation acted on
  action: jax.Array      # int32 [T, E, A]
  logp: jax.Array        # f32 [T, E, A], log-probability of `action` when acting
  value: jax.Array       # f32 [T, E, A], the value when acting
  reward: jax.Array      # f32 [T, E, A]
  done: jax.Array        # bool [T, E], the episode ended with this step
  agent_mask: jax.Array  # bool [T, E, A]


def loss_config() -> ml_collections.ConfigDict:
  """The `rl` section: rollout sizes and the loss (defaults: JaxMARL IPPO's SMAX config)."""
  c = ml_collections.ConfigDict()
  c.loss = 'ppo'              # ppo | vtrace
  c.env_steps = 0             # > 0: train for this many environment steps (not train.steps)
  c.num_envs = 128            # E, split over the `data` mesh axis
  c.num_seeds = 1             # S independent runs (seeds seed..seed+S-1), vmapped in one program
  c.unroll_length = 128       # T per update
  c.epochs = 4                # passes over each rollout (ppo)
  c.num_minibatches = 4       # of environments, per epoch
  c.gamma = 0.99
  c.gae_lambda = 0.95         # ppo; V-trace's lambda
  c.clip_eps = 0.05           # ppo ratio and value clipping
  c.entropy_coef = 0.01
  c.value_coef = 0.5
  c.clip_rho = 1.0            # vtrace importance-weight clipping
  return c


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  mask = mask.astype(jnp.float32)
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _entropy(logits: jax.Array) -> jax.Array:
  logp = jax.nn.log_softmax(logits)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def _logp(logits: jax.Array, action: jax.Array) -> jax.Array:
  return jnp.take_along_axis(jax.nn.log_softmax(logits), action[..., None], -1)[..., 0]


def gae(traj: Trajectory, last_value: jax.Array, *, gamma: float, lam: float):
  """Generalised advantage estimates and value targets, both [T, E, A]."""
  not_done = 1.0 - traj.done.astype(jnp.float32)[..., None]             # [T, E, 1]

  def backward(carry, x):
    advantage, next_value = carry
    reward, value, keep = x
    delta = reward + gamma * next_value * keep - value
    advantage = delta + gamma * lam * keep * advantage
    return (advantage, value), advantage

  _, advantages = jax.lax.scan(
      backward, (jnp.zeros_like(last_value), last_value),
      (traj.reward, traj.value, not_done), reverse=True)
  return advantages, advantages + traj.value


def ppo_loss(logits, value, traj: Trajectory, advantages, targets, c):
  """Clipped PPO (JaxMARL IPPO's): logits [T, E, A, K], value [T, E, A] of the current
  parameters; advantages are normalised over the minibatch. Returns (loss, metrics)."""
  mask = traj.agent_mask
  logp = _logp(logits, traj.action)
  clipped_value = traj.value + jnp.clip(value - traj.value, -c.clip_eps, c.clip_eps)
  value_loss = 0.5 * _masked_mean(jnp.maximum(
      jnp.square(value - targets), jnp.square(clipped_value - targets)), mask)
  mean = _masked_mean(advantages, mask)
  std = jnp.sqrt(_masked_mean(jnp.square(advantages - mean), mask))
  adv = (advantages - mean) / (std + 1e-8)
  ratio = jnp.exp(logp - traj.logp)
  policy_loss = -_masked_mean(jnp.minimum(
      ratio * adv, jnp.clip(ratio, 1 - c.clip_eps, 1 + c.clip_eps) * adv), mask)
  entropy = _masked_mean(_entropy(logits), mask)
  loss = policy_loss + c.value_coef * value_loss - c.entropy_coef * entropy
  return loss, {'policy_loss': policy_loss, 'value_loss': value_loss,
                'entropy': entropy,
                'approx_kl': _masked_mean((ratio - 1) - (logp - traj.logp), mask)}


def vtrace_loss(logits, value, last_value, traj: Trajectory, c):
  """V-trace actor-critic (rlax.vtrace_td_error_and_advantage) on the current
  parameters' logits [T, E, A, K], values [T, E, A] and bootstrap value [E, A]."""
  mask = traj.agent_mask
  logp = _logp(logits, traj.action)
  rho = jnp.exp(logp - traj.logp)
  discount = c.gamma * (1.0 - traj.done.astype(jnp.float32))[..., None]
  discount = jnp.broadcast_to(discount, value.shape)
  v_t = jnp.concatenate([value[1:], last_value[None]], axis=0)
  per_actor = lambda f: jax.vmap(jax.vmap(f, in_axes=1, out_axes=1), in_axes=1, out_axes=1)
  out = per_actor(lambda v, vt, r, d, p: rlax.vtrace_td_error_and_advantage(
      v, vt, r, d, p, lambda_=c.gae_lambda, clip_rho_threshold=c.clip_rho,
      clip_pg_rho_threshold=c.clip_rho))(value, v_t, traj.reward, discount, rho)
  policy_loss = -_masked_mean(logp * jax.lax.stop_gradient(out.pg_advantage), mask)
  value_loss = 0.5 * _masked_mean(jnp.square(out.errors), mask)
  entropy = _masked_mean(_entropy(logits), mask)
  loss = policy_loss + c.value_coef * value_loss - c.entropy_coef * entropy
  return loss, {'policy_loss': policy_loss, 'value_loss': value_loss,
                'entropy': entropy, 'approx_kl': _masked_mean(traj.logp - logp, mask)}
