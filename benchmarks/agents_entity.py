"""entity_micro: Perceiver IO vs Transformer vs pooled-MLP entity encoders, IMPALA.

    taskset -c 1 .venv/bin/python benchmarks/agents_entity.py [--steps 3000]
        [--seeds 0,1,2] [--supervised_steps 1000] [--encoders perceiver_io,transformer,mlp]
        [--set impala.discount=0.9 ...] [--out benchmarks/results]

For each encoder (same network sizes and hyper-parameters for all three), runs one after
another in this process:

  1. RL: trains the `agent` task on env=entity_micro for --steps updates, once per seed;
     the score is the mean return of the last 100 episodes (best possible 8; attacking a
     uniformly random enemy gives 8 * E[1/#enemies] = 3.27; a uniformly random policy
     about 1).
  2. Supervised check (--supervised_steps > 0): the same network (encoder, torso, core,
     pointer head) trained with cross-entropy on the right target of fresh scenes; the
     accuracy of its argmax on 2,000 held-out scenes says whether the architecture can
     represent "the enemy nearest your weakest unit" at all, separately from RL.

Writes agents_entity.json (every run's final return and curve, mean and spread per
encoder, the supervised accuracy curves) and agents_entity.png (left: RL return vs.
updates, mean over seeds with the min..max band; right: supervised accuracy).
`--set` passes extra config overrides (as `--config.` does on the command line).
"""

import argparse
import json
import os
import re
import shutil
import sys
import time

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from perceiver_agents import learner
from perceiver_agents.agents import networks
from perceiver_agents.agents.envs import entity_micro
from perceiver_agents.learner import read_metrics
from perceiver_agents.tasks import agent

ENCODERS = ('perceiver_io', 'transformer', 'mlp')
NETWORK = [
    'agent.num_channels=32', 'agent.num_latents=8', 'agent.num_layers=2',
    'agent.num_heads=2', 'agent.embedding_size=32', 'agent.entity_size=32',
    'agent.torso_size=64', 'agent.core_size=64']
TRAINING = [
    'train.batch_size=16', 'impala.unroll_length=8', 'optimizer.learning_rate=1e-3',
    'checkpoint.every=0', 'train.log_every=10', 'train.progress_bar=false']


def make_config(encoder: str, steps: int, seed: int, overrides=()):
  config = agent.get_config()
  learner.apply_overrides(config, [
      'env=entity_micro', f'agent.encoder={encoder}', f'train.steps={steps}',
      f'seed={seed}', *NETWORK, *TRAINING, *overrides])
  return config


def run_rl(encoder: str, steps: int, seed: int, workdir: str, overrides=()) -> dict:
  shutil.rmtree(workdir, ignore_errors=True)
  config = make_config(encoder, steps, seed, overrides)
  start = time.perf_counter()
  result = learner.train(agent.build(config), config, workdir)
  curve = [(r['step'], r['episode_return']) for r in read_metrics(workdir)
           if r['split'] == 'train']
  shutil.rmtree(workdir, ignore_errors=True)
  metrics = result.train_metrics  # The actors' metrics of the last update.
  return {'seed': seed, 'final_return_last_100': metrics['episode_return'],
          'episodes': metrics['episodes'], 'wall_seconds': time.perf_counter() - start,
          'curve': curve}


def _scenes(env: entity_micro.EntityMicroEnv, count: int):
  """count fresh scenes: observations {key: [count, ...]} and right targets [count]."""
  observations, targets = [], []
  for _ in range(count):
    observations.append(env.reset().observation)
    targets.append(env.target)
  return jax.tree.map(lambda *x: np.stack(x), *observations), np.array(targets)


def run_supervised(encoder: str, steps: int, seed: int, overrides=(),
                   batch_size: int = 128, learning_rate: float = 1e-3) -> dict:
  """Cross-entropy on the pointer head's logits for the right target (attack)."""
  config = make_config(encoder, steps, seed, overrides)
  env = entity_micro.EntityMicroEnv(seed=seed + 1)
  spec = env.env_spec()

  def target_logits(observation):
    net = networks.AgentNetwork(env_spec=spec, config=config.agent)
    batch = observation['entities'].shape[0]
    action = {'function': jnp.full([batch], entity_micro.ATTACK, jnp.int32),
              'target': jnp.zeros([batch], jnp.int32)}
    out, _ = net.step(observation, jnp.ones([batch], bool), net.initial_state(batch),
                      action=action)
    return out.logits['target']                                            # [B, N]

  model = hk.transform(target_logits)
  test_obs, test_targets = _scenes(env, 2000)
  params = model.init(jax.random.PRNGKey(seed), _scenes(env, batch_size)[0])
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)

  @jax.jit
  def update(params, opt_state, observation, targets):
    def loss(p):
      logits = model.apply(p, None, observation)
      return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  predict = jax.jit(lambda p, o: jnp.argmax(model.apply(p, None, o), axis=-1))
  accuracy = lambda p: float(np.mean(np.asarray(predict(p, test_obs)) == test_targets))
  curve = [(0, accuracy(params))]
  for step in range(1, steps + 1):
    params, opt_state = update(params, opt_state, *_scenes(env, batch_size))
    if step % 50 == 0 or step == steps:
      curve.append((step, accuracy(params)))
  return {'seed': seed, 'test_accuracy': curve[-1][1], 'curve': curve}


def compact_json(value) -> str:
  """json.dumps(indent=1), but each innermost list of numbers (a curve point) on one line."""
  return re.sub(r'\[\s+([-+\d.eE,\s]+?)\s+\]',
                lambda m: '[' + ' '.join(m.group(1).split()) + ']',
                json.dumps(value, indent=1)) + '\n'


def _plot(results: dict, chance: float, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  has_supervised = any(r.get('supervised') for r in results.values())
  fig, axes = plt.subplots(1, 2 if has_supervised else 1, squeeze=False,
                           figsize=(11 if has_supervised else 6, 4))
  ax = axes[0, 0]
  for encoder, r in results.items():
    steps = np.array([s for s, _ in r['runs'][0]['curve']])
    values = np.array([[v for _, v in run['curve']] for run in r['runs']])
    line, = ax.plot(steps, values.mean(0), label=f"{encoder} ({r['final_mean']:.2f})")
    if len(values) > 1:
      ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2,
                      color=line.get_color())
  ax.axhline(chance, color='gray', ls='--', lw=1, label=f'random enemy ({chance:.2f})')
  ax.set_xlabel('updates (16 trajectories x 8 steps each)')
  ax.set_ylabel('mean return, last 100 episodes (max 8)')
  ax.set_title('entity_micro, IMPALA: attack the enemy nearest your weakest unit',
               fontsize=9)
  ax.legend(fontsize=8)
  if has_supervised:
    ax = axes[0, 1]
    for encoder, r in results.items():
      if r.get('supervised'):
        steps, values = zip(*r['supervised']['curve'])
        ax.plot(steps, values, label=f"{encoder} ({values[-1]:.3f})")
    ax.set_xlabel('supervised steps (batch 128)')
    ax.set_ylabel('held-out accuracy of the pointer argmax')
    ax.set_title('same network, cross-entropy on the right target', fontsize=9)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--supervised_steps', type=int, default=1000)
  parser.add_argument('--encoders', default=','.join(ENCODERS))
  parser.add_argument('--set', nargs='*', default=[])
  parser.add_argument('--out', default='benchmarks/results')
  args = parser.parse_args()
  encoders = args.encoders.split(',')
  unknown = set(encoders) - set(ENCODERS)
  if unknown:
    raise SystemExit(f'--encoders: unknown {sorted(unknown)}; known: {ENCODERS}.')
  seeds = [int(s) for s in args.seeds.split(',')]
  os.makedirs(args.out, exist_ok=True)
  results = {}
  for encoder in encoders:
    runs = []
    for seed in seeds:
      runs.append(run_rl(encoder, args.steps, seed, f'/tmp/agents_entity_{encoder}',
                         args.set))
      print(json.dumps({'encoder': encoder, **{k: v for k, v in runs[-1].items()
                                               if k != 'curve'}}), flush=True)
    finals = [r['final_return_last_100'] for r in runs]
    results[encoder] = {'final_mean': float(np.mean(finals)),
                        'final_min': float(np.min(finals)),
                        'final_max': float(np.max(finals)), 'runs': runs}
    if args.supervised_steps:
      results[encoder]['supervised'] = run_supervised(
          encoder, args.supervised_steps, seeds[0], args.set)
      print(json.dumps({'encoder': encoder, 'supervised_test_accuracy':
                        results[encoder]['supervised']['test_accuracy']}), flush=True)
  chance = entity_micro.EntityMicroEnv().random_enemy_return()
  summary = {'command': ' '.join(['benchmarks/agents_entity.py'] + sys.argv[1:]),
             'args': vars(args), 'random_enemy_return': chance, 'encoders': results}
  with open(os.path.join(args.out, 'agents_entity.json'), 'w') as f:
    f.write(compact_json(summary))
  _plot(results, chance, os.path.join(args.out, 'agents_entity.png'))
  for encoder, r in results.items():
    sup = r.get('supervised', {}).get('test_accuracy')
    print(f"{encoder:14s} return {r['final_mean']:.2f} "
          f"[{r['final_min']:.2f}, {r['final_max']:.2f}]  supervised accuracy {sup}")


if __name__ == '__main__':
  main()
