"""The actor: a batch of dm_env environments stepped in lockstep by a jitted policy.

Shape letters: E environments of the actor (= trajectories per unroll), T unroll length,
K = T + 1 time steps per trajectory (consecutive trajectories overlap by one step).

A trajectory of environment e holds time steps 0..T: the observation of step t, the
action a_t the actor took there and its behaviour log-probability, and the reward and
discount the environment returned *on arriving* at step t. Transition t -> t+1 therefore
has reward `reward[t+1]` and discount `discount[t+1]`. When step t is the LAST of an
episode, the actor resets the environment instead of acting, so that transition is not
real: the loss masks it out (rho = 0 cuts the V-trace recursion there). A LAST step with
discount 1 (a time limit, truncation) bootstraps from the value of its observation;
discount 0 (termination) does not. Each trajectory also carries `param_version` [E], the
learner update whose parameters acted, and `core_state`, the LSTM state at its step 0.

Episode statistics leave the actor beside the trajectory (`UnrollStats`), not in it.
"""

import copy
from typing import Any, Callable, NamedTuple, Sequence

import dm_env
import haiku as hk
import jax
import numpy as np

from perceiver_agents.agents.specs import EnvSpec


class UnrollStats(NamedTuple):
  """What happened in the environments during one unroll."""
  env_steps: int                 # environment steps taken (resets not counted)
  episode_returns: list          # returns of the episodes that ended in it
  episode_lengths: list          # their lengths in environment steps


def _stack(items: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: np.stack(xs), *items)


def zeros_trajectories(env_spec: EnvSpec, *, num: int, unroll_length: int,
                       core_size: int) -> dict:
  """`num` all-zero trajectories of the layout `Actor.unroll` returns (for shapes)."""
  k = unroll_length + 1
  obs = env_spec.zeros()
  if 'action_mask' in obs:
    obs['action_mask'][:] = True
  tile = lambda x: np.broadcast_to(x, (num, k) + x.shape).copy()
  action = {key: np.zeros([num, k], np.int32) for key in env_spec.action.keys}
  zeros = lambda dtype: np.zeros([num, k], dtype)
  core = np.zeros([num, core_size], np.float32)
  return dict(observation=jax.tree.map(tile, obs), first=zeros(bool), last=zeros(bool),
              reward=zeros(np.float32), discount=zeros(np.float32), action=action,
              behaviour_logprob=zeros(np.float32),
              core_state={'hidden': core, 'cell': core.copy()},
              param_version=np.zeros([num], np.int32))


class Actor:
  """Runs `envs` in lockstep with given parameters and returns trajectories.

  Args:
    envs: E dm_env environments of one EnvSpec (observations and actions as dicts, see
      agents/specs.py); each observation is checked against the spec.
    env_spec: their EnvSpec.
    policy: the jitted step of networks.make_policy.
    core_size: the LSTM width (its initial state is zeros).
    unroll_length: T.
    key: PRNG key of the action sampling.
  """

  def __init__(self, *, envs: Sequence[dm_env.Environment], env_spec: EnvSpec,
               policy: Callable[..., Any], core_size: int, unroll_length: int,
               key: jax.Array):
    if not envs:
      raise ValueError('envs: need at least one environment.')
    if unroll_length < 1:
      raise ValueError(f'impala.unroll_length must be >= 1, got {unroll_length}.')
    self._envs = list(envs)
    self._spec = env_spec
    self._policy = policy
    self._unroll_length = unroll_length
    self._rng = np.asarray(key)
    self._timesteps = [self._checked(env.reset(), i) for i, env in enumerate(self._envs)]
    zeros = np.zeros([len(self._envs), core_size], np.float32)
    self._state = hk.LSTMState(hidden=zeros, cell=zeros.copy())
    self._episode_return = np.zeros(len(self._envs))
    self._episode_length = np.zeros(len(self._envs), np.int64)

  @property
  def num_envs(self) -> int:
    return len(self._envs)

  def _checked(self, timestep: dm_env.TimeStep, index: int) -> dm_env.TimeStep:
    self._spec.check_observation(timestep.observation, where=f'env {index} observation')
    return timestep

  def _act(self, params, first):
    obs = _stack([ts.observation for ts in self._timesteps])
    action, logp, state, self._rng = jax.device_get(
        self._policy(params, self._rng, obs, first, self._state))
    return obs, (action, logp, state)

  def unroll(self, params: Any, version: int) -> tuple[dict, UnrollStats]:
    """Trajectories [E, T + 1, ...] acted with `params` (learner update `version`)."""
    start_state = self._state
    steps, returns, lengths, env_steps = [], [], [], 0
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
        env_steps += 1
        self._episode_return[i] += ts.reward or 0.0
        self._episode_length[i] += 1
        if ts.last():
          returns.append(float(self._episode_return[i]))
          lengths.append(int(self._episode_length[i]))
          self._episode_return[i] = 0.0
          self._episode_length[i] = 0
        self._timesteps[i] = ts
    batch = jax.tree.map(lambda *xs: np.stack(xs, axis=1), *steps)        # [E, K, ...]
    batch['core_state'] = {'hidden': np.asarray(start_state.hidden),
                           'cell': np.asarray(start_state.cell)}
    batch['param_version'] = np.full([len(self._envs)], version, np.int32)
    return batch, UnrollStats(env_steps, returns, lengths)

  def get_state(self) -> dict:
    """Everything the next unroll depends on (environments included), copied; for
    resuming a run exactly (needs environments that can be deep-copied / pickled)."""
    return copy.deepcopy(dict(envs=self._envs, timesteps=self._timesteps,
                              state=tuple(np.asarray(s) for s in self._state),
                              rng=self._rng, episode_return=self._episode_return,
                              episode_length=self._episode_length))

  def set_state(self, state: dict) -> None:
    """Continues from a `get_state()`."""
    state = copy.deepcopy(state)
    if len(state['envs']) != len(self._envs):
      raise ValueError(f'actor state: has {len(state["envs"])} environments, the actor '
                       f'{len(self._envs)}.')
    self._envs, self._timesteps = state['envs'], state['timesteps']
    self._state = hk.LSTMState(*state['state'])
    self._rng = state['rng']
    self._episode_return = state['episode_return']
    self._episode_length = state['episode_length']

  def close(self) -> None:
    for env in self._envs:
      try:
        env.close()
      except Exception:  # pylint: disable=broad-except
        pass  # Closing is best effort: a failed environment may be half gone.
