"""The IMPALA learner's loss: V-trace actor-critic, as pure functions of arrays.

Shape letters: B trajectories, T transitions per trajectory.

`vtrace_loss` knows nothing of environments, networks or action spaces: it takes the
per-transition log-probabilities of the taken actions under the learner's (target) and
the actors' (behaviour) policies, values, rewards, discounts and a mask, so that any
agent (the dm_env IMPALA here, an on-device loop over pure-JAX environments) can use it.
`categorical_logprob_and_entropy` turns plain categorical logits into its inputs;
`impala_loss` adapts it to the trajectory layout of agents/impala/acting.py, whose
actions are structured (agents/heads.py).
"""

from typing import Callable, Mapping

import chex
import jax
import jax.numpy as jnp
import ml_collections
import rlax

from perceiver_agents.agents import heads as heads_lib
from perceiver_agents.agents.specs import EnvSpec

CLIP_TOLERANCE = 1e-3  # Relative: rho counts as clipped above threshold * (1 + this).


def vtrace_loss(*, target_logprob: chex.Array, behaviour_logprob: chex.Array,
                entropy: chex.Array, values: chex.Array, rewards: chex.Array,
                discounts: chex.Array, mask: chex.Array, vtrace_lambda: float = 1.0,
                clip_rho_threshold: float = 1.0, clip_pg_rho_threshold: float = 1.0,
                baseline_cost: float = 0.5, entropy_cost: float = 0.01
                ) -> tuple[chex.Array, Mapping[str, chex.Array]]:
  """Per-trajectory IMPALA losses [B] and metrics {name: [B]}.

  Transition t goes from time step t to t + 1 of a trajectory.

  Args:
    target_logprob: [B, T] log pi(a_t | x_t) under the parameters being trained.
    behaviour_logprob: [B, T] log mu(a_t | x_t) under the parameters that acted.
    entropy: [B, T] entropy of the target policy at step t.
    values: [B, T + 1] V(x_t) under the parameters being trained (the last bootstraps).
    rewards: [B, T] reward of transition t.
    discounts: [B, T] discount of transition t, already multiplied by the agent's gamma
      (0 where an episode terminated).
    mask: [B, T] 1 for real transitions, 0 for those to leave out (e.g. across a reset);
      a masked transition also cuts the V-trace recursion (its rho is 0).
    vtrace_lambda, clip_rho_threshold, clip_pg_rho_threshold: V-trace's (rlax).
    baseline_cost, entropy_cost: weights of the value loss and the entropy bonus.

  Returns:
    (losses [B], metrics): 'pg_loss', 'baseline_loss', 'entropy', 'value'; importance
    weights rho = pi / mu over the real transitions: 'rho_mean', 'rho_min' and
    'rho_max' (the trajectory's smallest and largest; inf and 0 without real
    transitions) and 'rho_clipped_fraction' (rho above clip_rho_threshold by more than
    CLIP_TOLERANCE, so that float round-off on-policy does not count).
  """
  chex.assert_rank([target_logprob, behaviour_logprob, entropy, values, rewards,
                    discounts, mask], [2, 2, 2, 2, 2, 2, 2])
  chex.assert_equal_shape([target_logprob, behaviour_logprob, entropy, rewards,
                           discounts, mask])
  b, t = target_logprob.shape
  if values.shape != (b, t + 1):
    raise ValueError(f'values: expected shape [B, T + 1] = {[b, t + 1]}, got '
                     f'{list(values.shape)}.')
  mask = mask.astype(jnp.float32)

  def per_trajectory(logp, mu_logp, ent, v, r, d, m):
    rho = jax.lax.stop_gradient(jnp.exp(logp - mu_logp))                   # [T]
    vtrace = rlax.vtrace_td_error_and_advantage(
        v[:-1], v[1:], r, d, rho * m, lambda_=vtrace_lambda,
        clip_rho_threshold=clip_rho_threshold,
        clip_pg_rho_threshold=clip_pg_rho_threshold)
    count = jnp.maximum(jnp.sum(m), 1.0)
    pg = -jnp.sum(jax.lax.stop_gradient(vtrace.pg_advantage) * logp * m) / count
    baseline = 0.5 * jnp.sum(jnp.square(vtrace.errors) * m) / count
    mean_entropy = jnp.sum(ent * m) / count
    loss = pg + baseline_cost * baseline - entropy_cost * mean_entropy
    return loss, {
        'pg_loss': pg, 'baseline_loss': baseline, 'entropy': mean_entropy,
        'value': jnp.sum(v[:-1] * m) / count,
        'rho_mean': jnp.sum(rho * m) / count,
        'rho_min': jnp.min(jnp.where(m > 0, rho, jnp.inf)),
        'rho_max': jnp.max(jnp.where(m > 0, rho, 0.0)),
        'rho_clipped_fraction': jnp.sum(
            (rho > clip_rho_threshold * (1 + CLIP_TOLERANCE)) * m) / count}

  return jax.vmap(per_trajectory)(target_logprob, behaviour_logprob, entropy, values,
                                  rewards, discounts, mask)


def categorical_logprob_and_entropy(logits: chex.Array, actions: chex.Array
                                    ) -> tuple[chex.Array, chex.Array]:
  """log pi(a) and the entropy of categorical `logits` [..., A] at `actions` [...]."""
  log_pi = jax.nn.log_softmax(logits, axis=-1)
  logp = jnp.take_along_axis(log_pi, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return logp, -jnp.sum(jnp.exp(log_pi) * log_pi, axis=-1)


def impala_loss(env_spec: EnvSpec, config: ml_collections.ConfigDict) -> Callable:
  """(outputs AgentOutput [B, K], batch) -> (losses [B], metrics {name: [B]}).

  `batch` has the trajectory layout of agents/impala/acting.py (K = T + 1 time steps; the
  reward and discount of transition t are stored at t + 1; a LAST step's transition
  crosses a reset and is masked out). `config` is the `impala` section.
  """
  spec = env_spec.action

  def loss_and_metrics(outputs, batch):
    logp = jax.vmap(lambda l, a: heads_lib.log_prob(spec, l, a))(
        outputs.logits, outputs.action)                                    # [B, K]
    ent = jax.vmap(lambda l, a: heads_lib.entropy(spec, l, a))(
        outputs.logits, outputs.action)                                    # [B, K]
    return vtrace_loss(
        target_logprob=logp[:, :-1],
        behaviour_logprob=batch['behaviour_logprob'][:, :-1],
        entropy=ent[:, :-1], values=outputs.value,
        rewards=batch['reward'][:, 1:],
        discounts=config.discount * batch['discount'][:, 1:],
        mask=~batch['last'][:, :-1], vtrace_lambda=config.vtrace_lambda,
        clip_rho_threshold=config.clip_rho_threshold,
        clip_pg_rho_threshold=config.clip_pg_rho_threshold,
        baseline_cost=config.baseline_cost, entropy_cost=config.entropy_cost)

  return loss_and_metrics
