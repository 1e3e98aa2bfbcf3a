"""Copy task at long context: how many steps and how long until >= 99% copy accuracy.

Trains `copy` (perceiver_agents/tasks/copy.py) through the learner loop, evaluating every
--eval-every steps on the fixed eval set, and prints the eval curve, the first step whose
copy accuracy reaches the threshold, and wall/CPU time.

    python benchmarks/perceiver_ar_copy.py --workdir /tmp/copy8k_bench \
        --config.train.steps=600 --config.eval.every=100
"""

import argparse
import json
import os
import resource
import sys
import time

from perceiver_agents import learner
from perceiver_agents.tasks import copy as copy_task


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--threshold', type=float, default=0.99)
  args, extra = parser.parse_known_args(argv)
  overrides = [a[len('--config.'):] for a in extra if a.startswith('--config.')]
  config = learner.apply_overrides(copy_task.get_config(), overrides)
  config.train.progress_bar = False
  t0, c0 = time.perf_counter(), time.process_time()
  result = learner.train(copy_task.build(config), config, args.workdir)
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0
  evals = [json.loads(line) for line in open(os.path.join(args.workdir, 'metrics.jsonl'))]
  evals = [e for e in evals if e['split'] == 'eval']
  reached = next((e['step'] for e in evals if e['copy_accuracy'] >= args.threshold), None)
  print(f'context N={config.model.max_context} latents M={config.model.num_latents} '
        f'copy S={config.data.copy_length} width C={config.model.num_channels} '
        f'batch={config.train.batch_size}')
  for e in evals:
    print(f"  step {e['step']:5d}  copy_accuracy {e['copy_accuracy']:.4f}  "
          f"sequence_accuracy {e['sequence_accuracy']:.4f}  loss {e['loss']:.4f}")
  print(f'first eval step with copy_accuracy >= {args.threshold}: {reached}')
  print(f'steps run: {result.step}; wall {wall:.0f} s; process CPU {cpu:.0f} s; '
        f'peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB')
  return 0 if reached is not None else 1


if __name__ == '__main__':
  sys.exit(main())
