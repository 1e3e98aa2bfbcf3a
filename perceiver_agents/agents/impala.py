"""IMPALA: an actor that runs a batch of dm_env environments, and the V-trace loss.

Shape letters: E environments (= B trajectories per update), T unroll length, K = T + 1
time steps per trajectory (consecutive trajectories overlap by one step).

A trajectory of environment e holds time steps 0..T: the observation of step t, the
action a_t the actor took there and its behaviour log-probability, and the reward and
discount the environment returned *on arriving* at step t. Transition t -> t+1 therefore
has reward `reward[t+1]` and discount `discount[t+1]`. When step t is the LAST of an
episode, the actor resets the environment instead of acting, so that transition is not
real: it is masked out of every loss (rho = 0 cuts the V-trace recursion there). A LAST
step with discount 1 (a time limit, truncation) bootstraps from the value of its
observation; discount 0 (termination) does not.

The update itself runs in perceiver_agents.learner: `build_task` returns a Task whose
`acting_batch(step, params)` asks the actor for trajectories with the current
parameters, and whose `loss` is the per-trajectory IMPALA loss [B].
"""

import collections
from typing import Any, Callable, Mapping, Sequence

import dm_env
import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import rlax

from perceiver_agents.agents import heads as heads_lib
from perceiver_agents.agents import networks
from perceiver_agents.agents.specs import EnvSpec

RETURN_WINDOW = 100  # Episodes averaged in the 'episode_return' metric.


def loss_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.discount = 0.99
  c.vtrace_lambda = 1.0
  c.clip_rho_threshold = 1.0
  c.baseline_cost = 0.5
  c.entropy_cost = 0.01
  c.unroll_length = 20          # T: transitions per trajectory
  return c


def make_networks(env_spec: EnvSpec, config: ml_collections.ConfigDict):
  """(step_fn, unroll_model) sharing one set of parameters.

  step_fn = hk.transform(observation, first, state) -> (AgentOutput, state), for the
  actor; unroll_model = hk.transform_with_state(batch, is_training) -> AgentOutput [B, K],
  for the learner (what a Task's `model` is).
  """
  def step(observation, first, state):
    net = networks.AgentNetwork(env_spec=env_spec, config=config)
    return net.step(observation, first, state)

  def unroll(batch, is_training):
    net = networks.AgentNetwork(env_spec=env_spec, config=config)
    state = hk.LSTMState(hidden=batch['core_state']['hidden'],
                         cell=batch['core_state']['cell'])
    return net.unroll(batch['observation'], batch['first'], state, batch['action'],
                      is_training=is_training)

  return hk.transform(step), hk.transform_with_state(unroll)


def impala_loss(env_spec: EnvSpec, config: ml_collections.ConfigDict) -> Callable:
  """(outputs AgentOutput [B, K], batch) -> (losses [B], metrics {name: [B]})."""
  spec = env_spec.action

  def per_trajectory(logits, values, action, batch):
    # One trajectory: logits {key: [K, ...]}, values [K], action {key: [K]}.
    logp = heads_lib.log_prob(spec, logits, action)                        # [K]
    ent = heads_lib.entropy(spec, logits, action)                          # [K]
    valid = (~batch['last'][:-1]).astype(jnp.float32)                      # [T]
    rho = jax.lax.stop_gradient(jnp.exp(logp[:-1] - batch['behaviour_logprob'][:-1]))
    vtrace = rlax.vtrace_td_error_and_advantage(
        values[:-1], values[1:], batch['reward'][1:],
        config.discount * batch['discount'][1:], rho * valid,
        lambda_=config.vtrace_lambda, clip_rho_threshold=config.clip_rho_threshold)
    count = jnp.maximum(jnp.sum(valid), 1.0)
    pg = -jnp.sum(jax.lax.stop_gradient(vtrace.pg_advantage) * logp[:-1] * valid) / count
    baseline = 0.5 * jnp.sum(jnp.square(vtrace.errors) * valid) / count
    entropy = jnp.sum(ent[:-1] * valid) / count
    loss = pg + config.baseline_cost * baseline - config.entropy_cost * entropy
    return loss, {'pg_loss': pg, 'baseline_loss': baseline, 'entropy': entropy,
                  'value': jnp.sum(values[:-1] * valid) / count,
                  'rho': jnp.sum(jnp.minimum(rho, 10.0) * valid) / count}

  def loss_and_metrics(outputs, batch):
    fields = {k: batch[k] for k in ('first', 'last', 'reward', 'discount',
                                    'behaviour_logprob')}
    return jax.vmap(per_trajectory)(outputs.logits, outputs.value, outputs.action, fields)

  return loss_and_metrics


def _stack(items: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: np.stack(xs), *items)


class Actor:
  """Runs `envs` in lockstep with the current parameters and returns trajectories.

  Args:
    envs: E dm_env environments of one EnvSpec (observations and actions as dicts, see
      agents/specs.py); each observation is checked against the spec.
    env_spec: their EnvSpec.
    step_fn: the hk.Transformed step of `make_networks`.
    core_size: the LSTM width (its initial state is zeros).
    unroll_length: T.
    seed: seeds the action sampling.
  """

  def __init__(self, *, envs: Sequence[dm_env.Environment], env_spec: EnvSpec,
               step_fn: hk.Transformed, core_size: int, unroll_length: int, seed: int):
    if not envs:
      raise ValueError('envs: need at least one environment.')
    if unroll_length < 1:
      raise ValueError(f'unroll_length must be >= 1, got {unroll_length}.')
    self._envs = list(envs)
    self._spec = env_spec
    self._unroll_length = unroll_length
    self._rng = jax.random.PRNGKey(seed)
    def act(params, key, obs, first, state):
      out, state = step_fn.apply(params, key, obs, first, state)
      return out.action, heads_lib.log_prob(env_spec.action, out.logits, out.action), state
    self._step = jax.jit(act)
    self._timesteps = [self._checked(env.reset(), i) for i, env in enumerate(self._envs)]
    zeros = np.zeros([len(self._envs), core_size], np.float32)
    self._state = hk.LSTMState(hidden=zeros, cell=zeros)
    self._episode_return = np.zeros(len(self._envs))
    self.returns = collections.deque(maxlen=RETURN_WINDOW)  # Completed episodes.
    self.episodes = 0
    self.env_steps = 0
    self.last_batch = None

  def _checked(self, timestep: dm_env.TimeStep, index: int) -> dm_env.TimeStep:
    self._spec.check_observation(timestep.observation, where=f'env {index} observation')
    return timestep

  def _act(self, params, first):
    obs = _stack([ts.observation for ts in self._timesteps])
    self._rng, key = jax.random.split(self._rng)
    return obs, jax.device_get(self._step(params, key, obs, first, self._state))

  def collect(self, params: Any) -> dict:
    """Trajectories [E, T + 1, ...] acted with `params` (see the module docstring)."""
    start_state = self._state
    steps = []
    for t in range(self._unroll_length + 1):
      first = np.array([ts.first() for ts in self._timesteps])
      last = np.array([ts.last() for ts in self._timesteps])
      obs, (action, logp, state) = self._act(params, first)
      steps.append(dict(
          observation=obs, first=first, last=last,
          reward=np.array([ts.reward or 0.0 for ts in self._timesteps], np.float32),
          discount=np.array([1.0 if ts.discount is None else ts.discount
                             for ts in self._timesteps], np.float32),
          action=action, behaviour_logprob=np.asarray(logp, np.float32)))
      if t == self._unroll_length:
        break  # Step T starts the next trajectory; it is acted on again there.
      self._state = state
      for i, env in enumerate(self._envs):
        ts = self._timesteps[i]
        if ts.last():
          self._timesteps[i] = self._checked(env.reset(), i)
          continue
        env_action = {k: int(v[i]) for k, v in action.items()}
        ts = self._checked(env.step(env_action), i)
        self.env_steps += 1
        self._episode_return[i] += ts.reward or 0.0
        if ts.last():
          self.returns.append(self._episode_return[i])
          self.episodes += 1
          self._episode_return[i] = 0.0
        self._timesteps[i] = ts
    batch = jax.tree.map(lambda *xs: np.stack(xs, axis=1), *steps)        # [E, K, ...]
    batch['core_state'] = {'hidden': np.asarray(start_state.hidden),
                           'cell': np.asarray(start_state.cell)}
    mean_return = float(np.mean(self.returns)) if self.returns else 0.0
    batch['episode_return'] = np.full([len(self._envs)], mean_return, np.float32)
    self.last_batch = batch
    return batch

  def zeros_batch(self) -> dict:
    """A batch of the layout `collect` returns, all zeros (for shapes at init)."""
    k, e = self._unroll_length + 1, len(self._envs)
    obs = self._spec.zeros()
    if 'action_mask' in obs:
      obs['action_mask'][:] = True
    tile = lambda x: np.broadcast_to(x, (e, k) + x.shape).copy()
    action = {key: np.zeros([e, k], np.int32) for key in self._spec.action.keys}
    zeros = lambda dtype: np.zeros([e, k], dtype)
    return dict(observation=jax.tree.map(tile, obs), first=zeros(bool), last=zeros(bool),
                reward=zeros(np.float32), discount=zeros(np.float32), action=action,
                behaviour_logprob=zeros(np.float32),
                core_state={'hidden': np.asarray(self._state.hidden) * 0,
                            'cell': np.asarray(self._state.cell) * 0},
                episode_return=np.zeros([e], np.float32))

