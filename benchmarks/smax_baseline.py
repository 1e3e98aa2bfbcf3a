"""JaxMARL's own IPPO baseline (baselines/IPPO/ippo_rnn_smax.py), run unmodified from a
scratch checkout of github.com/FLAIROx/JaxMARL (never vendored into this repository).

    git clone https://github.com/FLAIROx/JaxMARL /tmp/jaxmarl_src   # or any checkout
    flock /tmp/perceiver_bench.lock python benchmarks/smax_baseline.py \
        --jaxmarl-src /tmp/jaxmarl_src --map 3m --steps 2e6 \
        --out benchmarks/results/smax_baseline_3m.json

The script's `make_train(config)` is called with its own YAML config
(baselines/IPPO/config/ippo_rnn_smax.yaml: 128 envs x 128 steps, GRU 128, PPO), with
MAP_NAME, TOTAL_TIMESTEPS and SEED replaced. It logs through `wandb.log` from an
io_callback once per update; a stand-in `wandb` module records those dicts with a wall
clock instead, and `hydra`/`omegaconf` stand-ins let the file import without them (only
its `main()` uses them, and it is not called). Output: one JSON with the per-update curve
(env_step, win_rate, returns, seconds since the first update finished) and env steps/s.
"""

import argparse
import importlib.util
import json
import os
import sys
import time
import types


def _stand_ins(records: list) -> None:
  wandb = types.ModuleType('wandb')
  def log(values):
    record = {k: float(v) for k, v in values.items()}
    record['wall'] = time.perf_counter()
    records.append(record)
    if len(records) % 10 == 1:
      print(json.dumps({k: round(v, 4) for k, v in record.items()
                        if k in ('env_step', 'win_rate', 'returns')}), flush=True)
  wandb.log = log
  wandb.init = lambda **kw: None
  hydra = types.ModuleType('hydra')
  hydra.main = lambda **kw: (lambda fn: fn)
  omegaconf = types.ModuleType('omegaconf')
  omegaconf.OmegaConf = None
  sys.modules.update(wandb=wandb, hydra=hydra, omegaconf=omegaconf)


def _load_config(path: str) -> dict:
  config = {}
  with open(path) as f:
    for line in f:
      line = line.split('#')[0].rstrip()
      if not line.strip() or '${' in line:
        continue
      if line.startswith(' ') and config:  # ENV_KWARGS entries.
        key, _, value = line.strip().partition(':')
        config['ENV_KWARGS'][key.strip('" ')] = _value(value)
        continue
      key, _, value = line.partition(':')
      key = key.strip('" ')
      config[key] = {} if not value.strip() else _value(value)
  return config


def _value(text: str):
  text = text.strip().strip('"')
  if text in ('True', 'False'):
    return text == 'True'
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def run(src: str, map_name: str, steps: float, seed: int) -> dict:
  records = []
  _stand_ins(records)
  import jax  # pylint: disable=g-import-not-at-top
  ippo_dir = os.path.join(src, 'baselines', 'IPPO')
  spec = importlib.util.spec_from_file_location(
      'ippo_rnn_smax', os.path.join(ippo_dir, 'ippo_rnn_smax.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = _load_config(os.path.join(ippo_dir, 'config', 'ippo_rnn_smax.yaml'))
  config.update(MAP_NAME=map_name, TOTAL_TIMESTEPS=float(steps), SEED=seed)
  start = time.perf_counter()
  train = jax.jit(module.make_train(dict(config)))
  out = train(jax.random.PRNGKey(seed))
  jax.block_until_ready(out)
  total = time.perf_counter() - start
  first = records[0]['wall']
  curve = [{'env_step': r['env_step'] + config['NUM_ENVS'] * config['NUM_STEPS'],
            'win_rate': r['win_rate'], 'returns': r['returns'],
            'seconds': r['wall'] - first} for r in records]
  steady = (curve[-1]['env_step'] - curve[0]['env_step']) / max(curve[-1]['seconds'], 1e-9)
  return {'map': map_name, 'seed': seed, 'config': config, 'curve': curve,
          'env_steps': curve[-1]['env_step'], 'wall_seconds_with_compile': total,
          'env_steps_per_s': steady}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--jaxmarl-src', required=True)
  parser.add_argument('--map', default='3m')
  parser.add_argument('--steps', type=float, default=2e6)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  result = run(args.jaxmarl_src, args.map, args.steps, args.seed)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=1)
  print(json.dumps({k: result[k] for k in ('map', 'env_steps', 'env_steps_per_s',
                                           'wall_seconds_with_compile')}))


if __name__ == '__main__':
  main()
