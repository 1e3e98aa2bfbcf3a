"""Anakin: acting and learning in one compiled program, for pure-JAX environments.

One update (one jitted call) runs, on the devices, for E environments vmapped and split
over the learner's `data` mesh axis (perceiver_agents.learner.sharding):

    T environment steps (policy -> sample -> env.step, as a lax.scan)
    -> trajectory [T, E, ...] -> advantages (GAE, or V-trace in the loss)
    -> `epochs` x `num_minibatches` optimizer steps (perceiver_agents.learner.optim)

so N devices run N x the environments with the same program; parameters are replicated
and XLA averages the gradients across devices. The run's state is a learner TrainState
whose `state` field holds the environments (Runner: env states, current observations,
running episode returns and lengths): a checkpoint (learner.Checkpointer) has all of it,
so a resumed run continues the same episodes, bit-identically on the same device count.
The key of update s is fold_in(rng, s), as in the learner's loop.

Seeds: with rl.num_seeds = S > 1 the whole TrainState (parameters, optimizer, environments,
keys, step) gets a leading seed axis [S, ...] and init/update are vmapped over it, so S
independent runs (seeds config.seed .. config.seed + S - 1, each the same as a run of
rl.num_seeds=1 with that seed, within float tolerance) share one compiled program. The
environments of every seed are split over the `data` axis.

Metrics per update (means over the episodes that ended during its rollout, and the
loss terms): episodes, episode_return, episode_length, win_rate (where the environment
reports 'won'), loss, policy_loss, value_loss, entropy, approx_kl, grad_norm; env_steps
(per seed) and env_steps_per_s (of all seeds together). With S > 1 seeds these are means
over the seeds, and '<name>/seed<i>' (i = 0..S-1) holds seed i's episode statistics and loss.
"""

import time
from typing import Any, Callable, NamedTuple, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from perceiver_agents.agents.anakin import losses as losses_lib
from perceiver_agents.agents.anakin import networks as networks_lib
from perceiver_agents.agents.envs.jax_envs.base import batched
from perceiver_agents.learner import checkpoint as checkpoint_lib
from perceiver_agents.learner import loop as learner_loop
from perceiver_agents.learner import optim
from perceiver_agents.learner import sharding as sharding_lib
from perceiver_agents.learner.sharding import DATA_AXIS
from perceiver_agents.learner.state import TrainState

CHECKPOINT_DIR = learner_loop.CHECKPOINT_DIR
EPISODE_SUMS = ('episodes', 'return_sum', 'length_sum', 'won_sum')


class Runner(NamedTuple):
  """The environments between two updates (leading axis E on every leaf)."""
  env_state: Any
  obs: Any
  episode_return: jax.Array   # f32 [E]
  episode_length: jax.Array   # int32 [E]


class Programs(NamedTuple):
  """The compiled functions of a run; with num_seeds S > 1 every TrainState leaf and every
  scalar of `update` has a leading seed axis [S]."""
  mesh: jax.sharding.Mesh
  network: hk.Transformed
  init: Callable[[jax.Array], TrainState]       # init_keys(config) -> TrainState
  update: Callable[[TrainState], tuple]          # TrainState -> (TrainState, scalars)
  shapes: TrainState
  shardings: TrainState
  env_steps_per_update: int                      # of one seed
  num_seeds: int


def init_keys(config: ml_collections.ConfigDict) -> jax.Array:
  """The base key of each seed for Programs.init: PRNGKey(config.seed) [2], or with
  rl.num_seeds = S > 1 those of seeds config.seed .. config.seed + S - 1, stacked [S, 2]."""
  if config.rl.num_seeds == 1:
    return jax.random.PRNGKey(config.seed)
  return jnp.stack([jax.random.PRNGKey(config.seed + i)
                    for i in range(config.rl.num_seeds)])


def seed_slice(tree: Any, index: int, num_seeds: int) -> Any:
  """Seed `index`'s part of a (possibly seed-batched) tree: the tree itself when S = 1."""
  return tree if num_seeds == 1 else jax.tree.map(lambda x: x[index], tree)


def num_updates(config: ml_collections.ConfigDict) -> int:
  """train.steps, or enough updates for rl.env_steps environment steps when that is set."""
  per_update = config.rl.num_envs * config.rl.unroll_length
  if config.rl.env_steps > 0:
    return max(1, -(-int(config.rl.env_steps) // per_update))
  return config.train.steps


def _check(config: ml_collections.ConfigDict, num_devices: int, env) -> None:
  rl = config.rl
  if rl.loss not in losses_lib.LOSSES:
    raise ValueError(f'rl.loss: expected one of {losses_lib.LOSSES}, got {rl.loss!r}.')
  for name in ('num_envs', 'unroll_length', 'epochs', 'num_minibatches', 'num_seeds'):
    if rl[name] < 1:
      raise ValueError(f'rl.{name} must be >= 1, got {rl[name]}.')
  if rl.num_envs % num_devices:
    raise ValueError(f'rl.num_envs must be a multiple of the number of devices '
                     f'({num_devices}), got {rl.num_envs}.')
  if rl.num_envs % rl.num_minibatches:
    raise ValueError(f'rl.num_envs ({rl.num_envs}) must be a multiple of '
                     f'rl.num_minibatches ({rl.num_minibatches}).')
  maps = getattr(env, 'maps', None)   # A mixture gives each map an equal share.
  if maps and rl.num_envs % len(maps):
    raise ValueError(f'rl.num_envs ({rl.num_envs}) must be a multiple of the number of '
                     f'maps of the mixture ({len(maps)}: {"+".join(maps)}).')


def build(env, config: ml_collections.ConfigDict,
          mesh: Optional[jax.sharding.Mesh] = None) -> Programs:
  """Jit-compiled init(rng) and update(train_state) for `env` (a jax_envs environment)."""
  mesh = sharding_lib.make_mesh() if mesh is None else mesh
  _check(config, mesh.size, env)
  rl = config.rl
  num_envs, unroll = rl.num_envs, rl.unroll_length
  network = networks_lib.make_network(config.agent, env)
  env_reset, env_step = batched(env)
  optimizer, _ = optim.make_optimizer(
      config, total_steps=num_updates(config) * rl.epochs * rl.num_minibatches)
  has_won = 'won' in jax.eval_shape(
      lambda k: env_step(*_first_step_args(env_reset, k, num_envs, env.num_agents)),
      jax.random.PRNGKey(0))[4]

  def init(rng: jax.Array) -> TrainState:
    init_key, env_key, run_key = jax.random.split(rng, 3)
    obs, env_state = env_reset(jax.random.split(env_key, num_envs))
    # Strong types: a weakly typed leaf (e.g. jaxmarl's heuristic-enemy state) would
    # come back strong from `update` and make the second call compile again.
    env_state = jax.tree.map(lambda x: jnp.asarray(x, x.dtype), env_state)
    params = network.init(init_key, obs)
    runner = Runner(env_state, obs, jnp.zeros([num_envs], jnp.float32),
                    jnp.zeros([num_envs], jnp.int32))
    return TrainState(params=params, state=runner, opt_state=optimizer.init(params),
                      step=jnp.zeros([], jnp.int32), rng=run_key)

  def rollout(params, runner: Runner, key):
    def one_step(carry, t):
      runner, sums = carry
      act_key, env_key = jax.random.split(jax.random.fold_in(key, t))
      logits, value = network.apply(params, runner.obs)                  # [E, A, K]
      action, logp = networks_lib.sample(act_key, logits)                 # [E, A]
      obs, env_state, reward, done, info = env_step(
          jax.random.split(env_key, num_envs), runner.env_state, action)
      episode_return = runner.episode_return + reward[:, 0]
      episode_length = runner.episode_length + 1
      d = done.astype(jnp.float32)
      sums = {'episodes': sums['episodes'] + jnp.sum(d),
              'return_sum': sums['return_sum'] + jnp.sum(d * episode_return),
              'length_sum': sums['length_sum'] + jnp.sum(d * episode_length),
              **({'won_sum': sums['won_sum'] + jnp.sum(d * info['won'])}
                 if has_won else {})}
      step = losses_lib.Trajectory(
          obs=runner.obs, action=action, logp=logp, value=value, reward=reward,
          done=done, agent_mask=runner.obs['agent_mask'])
      runner = Runner(env_state, obs, jnp.where(done, 0., episode_return),
                      jnp.where(done, 0, episode_length))
      return (runner, sums), step
    sums = {k: jnp.zeros([], jnp.float32) for k in EPISODE_SUMS
            if has_won or k != 'won_sum'}
    (runner, sums), traj = jax.lax.scan(one_step, (runner, sums), jnp.arange(unroll))
    return runner, traj, sums

  def apply_tm(params, obs):
    """The network over time-major observations [T, e, ...] -> [T, e, A, K], [T, e, A]."""
    t, e = obs['agent_mask'].shape[:2]
    merged = jax.tree.map(lambda x: jnp.reshape(x, (t * e,) + x.shape[2:]), obs)
    logits, value = network.apply(params, merged)
    return (jnp.reshape(logits, (t, e) + logits.shape[1:]),
            jnp.reshape(value, (t, e) + value.shape[1:]))

  def minibatch_loss(params, batch):
    traj = batch['traj']
    logits, value = apply_tm(params, traj.obs)
    if rl.loss == 'ppo':
      return losses_lib.ppo_loss(logits, value, traj, batch['advantages'],
                                 batch['targets'], rl)
    _, last_value = network.apply(params, batch['last_obs'])
    return losses_lib.vtrace_loss(logits, value, last_value, traj, rl)

  def update(ts: TrainState):
    key = jax.random.fold_in(ts.rng, ts.step)
    roll_key, learn_key = jax.random.split(key)
    runner, traj, sums = rollout(ts.params, ts.state, roll_key)
    batch = {'traj': traj, 'last_obs': runner.obs}
    if rl.loss == 'ppo':
      _, last_value = network.apply(ts.params, runner.obs)
      batch['advantages'], batch['targets'] = losses_lib.gae(
          traj, last_value, gamma=rl.gamma, lam=rl.gae_lambda)

    def sgd_step(carry, minibatch):
      params, opt_state = carry
      (loss, metrics), grads = jax.value_and_grad(minibatch_loss, has_aux=True)(
          params, minibatch)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
      return (optax.apply_updates(params, updates), opt_state), metrics

    def epoch(carry, epoch_key):
      perm = jax.random.permutation(epoch_key, num_envs)
      def env_axis(path, x):  # traj leaves are [T, E, ...]; last_obs leaves [E, ...]
        axis = 1 if jax.tree_util.keystr(path).startswith("['traj']") or \
            jax.tree_util.keystr(path).startswith("['advantages']") or \
            jax.tree_util.keystr(path).startswith("['targets']") else 0
        x = jnp.take(x, perm, axis=axis)
        shape = x.shape[:axis] + (rl.num_minibatches, -1) + x.shape[axis + 1:]
        return jnp.moveaxis(jnp.reshape(x, shape), axis, 0)
      minibatches = jax.tree_util.tree_map_with_path(env_axis, batch)
      return jax.lax.scan(sgd_step, carry, minibatches)

    (params, opt_state), metrics = jax.lax.scan(
        epoch, (ts.params, ts.opt_state), jax.random.split(learn_key, rl.epochs))
    scalars = {k: jnp.mean(v) for k, v in metrics.items()}
    scalars.update(sums)
    return TrainState(params, runner, opt_state, ts.step + 1, ts.rng), scalars

  num_seeds = rl.num_seeds
  if num_seeds > 1:  # One independent run per seed, side by side in one program.
    init, update = jax.vmap(init), jax.vmap(update)
  shapes = jax.eval_shape(init, init_keys(config))
  rep = sharding_lib.replicated(mesh)
  # The environment axis of the Runner (after the seed axis, if any) is split over `data`.
  data = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(*([None] if num_seeds > 1 else []), DATA_AXIS))
  shardings = TrainState(params=jax.tree.map(lambda _: rep, shapes.params),
                         state=jax.tree.map(lambda _: data, shapes.state),
                         opt_state=jax.tree.map(lambda _: rep, shapes.opt_state),
                         step=rep, rng=rep)
  return Programs(
      mesh=mesh, network=network,
      init=jax.jit(init, in_shardings=rep, out_shardings=shardings),
      update=jax.jit(update, in_shardings=(shardings,), out_shardings=(shardings, rep),
                     donate_argnums=0),
      shapes=shapes, shardings=shardings, env_steps_per_update=num_envs * unroll,
      num_seeds=num_seeds)


def _first_step_args(env_reset, key, num_envs, num_agents):
  obs, state = env_reset(jax.random.split(key, num_envs))
  return (jax.random.split(key, num_envs), state,
          jnp.zeros([num_envs, num_agents], jnp.int32))


def episode_means(sums: dict) -> dict:
  """Means over episodes from summed episode statistics (NaN where none ended)."""
  n = sums['episodes']
  mean = lambda k: sums[k] / n if n else float('nan')
  means = {'episodes': n, 'episode_return': mean('return_sum'),
           'episode_length': mean('length_sum')}
  if 'won_sum' in sums:
    means['win_rate'] = mean('won_sum')
  return means


class TrainResult(NamedTuple):
  step: int
  env_steps: int                 # of one seed
  metrics: dict                  # the last log window's
  seconds: float                 # training time, without compilation
  interrupted_by: Optional[int]  # the signal number that stopped the run early, or None


SEED_METRICS = ('episodes', 'episode_return', 'episode_length', 'win_rate', 'loss')


def _window_metrics(stacked: list, num_seeds: int) -> list:
  """Per seed, the means of a log window's update scalars [{name: [] or [S]}]."""
  arrays = {k: np.stack([np.reshape(s[k], (-1,)) for s in stacked]) for k in stacked[0]}
  seeds = []
  for i in range(num_seeds):
    sums = {k: float(arrays[k][:, i].sum()) for k in EPISODE_SUMS if k in arrays}
    means = {k: float(arrays[k][:, i].mean()) for k in arrays if k not in EPISODE_SUMS}
    means.update(episode_means(sums))
    seeds.append(means)
  return seeds


def _seed_mean(values: list) -> float:
  finite = [v for v in values if np.isfinite(v)]
  return float(np.mean(finite)) if finite else float('nan')


def train(env, config: ml_collections.ConfigDict, workdir: str, *,
          mesh: Optional[jax.sharding.Mesh] = None,
          programs: Optional[Programs] = None,
          on_ready: Optional[Callable[[Optional[int]], None]] = None) -> TrainResult:
  """Runs num_updates(config) updates, resuming from `workdir`'s newest intact checkpoint
  (damaged newer ones are skipped with a warning and moved aside, as the learner does).
  `on_ready(restored_step or None)` is called once the state is built or restored.

  Writes checkpoints/<step>/ (every checkpoint.every updates, at the end, and on
  SIGINT/SIGTERM, which stop the run with `interrupted_by` set), metrics.jsonl +
  TensorBoard ('train' split) and config.json: perceiver_agents.learner's skeleton
  (learner.loop.Run).

  Raises:
    learner.NonFiniteLossError: a seed's loss became NaN/inf (no checkpoint after it).
  """
  programs = build(env, config, mesh) if programs is None else programs
  per_update, num_seeds = programs.env_steps_per_update, programs.num_seeds
  log_every, ckpt_every = config.train.log_every, config.checkpoint.every
  pending, metrics, seconds = [], {}, 0.0

  with learner_loop.Run(
      workdir, config, total=num_updates(config), unit='update',
      init=lambda: programs.init(init_keys(config)),
      target=checkpoint_lib.abstract_target(programs.shapes, programs.shardings),
      on_ready=on_ready) as run:
    ts = run.state

    def log(elapsed):
      nonlocal metrics
      stacked = jax.device_get(pending)
      seeds = _window_metrics(stacked, num_seeds)
      if not all(np.isfinite(m['loss']) for m in seeds):
        raise learner_loop.NonFiniteLossError(
            f'Loss is not finite at update {run.step}; stopping. The last good checkpoint '
            f'is {run.checkpoints.latest_step()} in {run.checkpoints.directory}.')
      metrics = {k: _seed_mean([m[k] for m in seeds]) for k in seeds[0]}
      if num_seeds > 1:
        metrics.update({f'{k}/seed{i}': m[k] for i, m in enumerate(seeds)
                        for k in SEED_METRICS if k in m})
      metrics['env_steps'] = run.step * per_update
      metrics['env_steps_per_s'] = len(stacked) * per_update * num_seeds / max(elapsed, 1e-9)
      pending.clear()
      run.write('train', {k: v for k, v in metrics.items() if np.isfinite(v)})
      run.bar.set_postfix(
          ret=f'{metrics["episode_return"]:.2f}', sps=f'{metrics["env_steps_per_s"]:.0f}',
          **({'win': f'{metrics["win_rate"]:.2f}'} if 'win_rate' in metrics else {}))

    t_log, compiled = time.perf_counter(), False
    while run.more():
      ts, scalars = programs.update(ts)
      pending.append(scalars)
      run.advance()
      if not compiled or run.due(log_every) or run.step == run.total:
        jax.block_until_ready(scalars)
        if compiled:
          elapsed = time.perf_counter() - t_log
          seconds += elapsed
        else:  # The first update's time is mostly compilation.
          elapsed, compiled = float('inf'), True
        log(elapsed)
        t_log = time.perf_counter()
      if run.due(ckpt_every):
        jax.block_until_ready(ts)
        t_pause = time.perf_counter()
        run.save(ts)
        t_log += time.perf_counter() - t_pause  # Throughput counts training time only.
    if pending:  # A stop signal came between two logs.
      jax.block_until_ready(pending)
      log(time.perf_counter() - t_log)
    run.save(ts)
    run.finish()
    return TrainResult(run.step, run.step * per_update, metrics, seconds, run.stopped_by)


def load_params(env, config: ml_collections.ConfigDict, workdir: str, *,
                programs: Optional[Programs] = None) -> tuple[Any, int]:
  """(params, update step) of the newest intact checkpoint in `workdir` (damaged newer
  ones are skipped with a warning); params have the seed axis [S, ...] when S > 1."""
  programs = build(env, config) if programs is None else programs
  ts = learner_loop.load_checkpoint(
      workdir, checkpoint_lib.abstract_target(programs.shapes, programs.shardings))
  return ts.params, int(np.reshape(jax.device_get(ts.step), (-1,))[0])


def run_episodes(env, network: hk.Transformed, params: Any, key: jax.Array, *,
                 num_envs: int, max_steps: int, greedy: bool = False,
                 record: bool = False) -> dict:
  """Plays the first episode of `num_envs` fresh environments for at most `max_steps`.

  Returns host arrays [num_envs]: 'finished' (bool), 'return', 'length', 'won' of each
  first episode (0 where unfinished); with `record`, also 'states': the env states of
  environment 0 at every step (for rendering), 'actions' [max_steps, A] and 'keys'
  [max_steps, 2] (the step keys of environment 0).
  """
  env_reset, env_step = batched(env)

  def play(params, key):
    reset_key, key = jax.random.split(key)
    obs, state = env_reset(jax.random.split(reset_key, num_envs))
    zeros = jnp.zeros([num_envs])
    carry = (obs, state, zeros, zeros, zeros, jnp.zeros([num_envs], bool))

    def one_step(carry, t):
      obs, state, ret, length, won, finished = carry
      act_key, env_key = jax.random.split(jax.random.fold_in(key, t))
      logits, _ = network.apply(params, obs)
      action = (jnp.argmax(logits, -1).astype(jnp.int32) if greedy
                else networks_lib.sample(act_key, logits)[0])
      step_keys = jax.random.split(env_key, num_envs)
      next_obs, next_state, reward, done, info = env_step(step_keys, state, action)
      live = ~finished
      ret = ret + jnp.where(live, reward[:, 0], 0.)
      length = length + live
      won = jnp.where(live & done, info.get('won', zeros), won)
      out = ((jax.tree.map(lambda x: x[0], state), action[0], step_keys[0]) if record
             else None)
      return (next_obs, next_state, ret, length, won, finished | done), out

    (_, _, ret, length, won, finished), trace = jax.lax.scan(
        one_step, carry, jnp.arange(max_steps))
    return {'finished': finished, 'return': ret, 'length': length, 'won': won}, trace

  results, trace = jax.jit(play)(params, key)
  results = jax.device_get(results)
  if record:
    results['states'], results['actions'], results['keys'] = jax.device_get(trace)
  return results
