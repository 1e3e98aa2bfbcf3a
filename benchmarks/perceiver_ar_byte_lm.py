"""byte_lm on real offline text: held-out bits per byte against a bigram baseline.

Trains `byte_lm` (perceiver_agents/tasks/byte_lm.py; default text: gensim's Lee news
corpus, last 10% held out) through the learner loop, then prints the model's held-out
bits per byte next to an add-one smoothed byte-bigram fit on the same training bytes and
scored on exactly the same held-out bytes.

    python benchmarks/perceiver_ar_byte_lm.py --workdir /tmp/byte_lm_bench \
        --config.train.steps=1200
"""

import argparse
import resource
import sys
import time

from perceiver_agents import learner
from perceiver_agents.tasks import byte_lm


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  args, extra = parser.parse_known_args(argv)
  overrides = [a[len('--config.'):] for a in extra if a.startswith('--config.')]
  config = learner.apply_overrides(byte_lm.get_config(), overrides)
  config.train.progress_bar = False
  task = byte_lm.build(config)
  splits = byte_lm.load_splits(config)
  n, m = config.model.max_context, config.model.num_latents
  eval_set = byte_lm.windows(splits['eval'], byte_lm.eval_starts(
      len(splits['eval']), context=n, num_latents=m,
      max_windows=config.data.max_eval_windows), context=n, num_latents=m)
  bigram = byte_lm.bigram_bits_per_byte(splits['train'], eval_set)
  t0, c0 = time.perf_counter(), time.process_time()
  result = learner.train(task, config, args.workdir)
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0
  model_bpb = result.eval_metrics['bits_per_byte']
  print(f"text: {config.data.files or byte_lm.default_corpus()}; train "
        f"{len(splits['train'])} bytes, held-out {len(splits['eval'])} bytes, scored "
        f"{eval_set['targets'].size}")
  print(f'model N={n} M={m} C={config.model.num_channels} layers={config.model.num_layers}'
        f', {result.step} steps of batch {config.train.batch_size}; wall {wall:.0f} s, '
        f'CPU {cpu:.0f} s, peak RSS '
        f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB')
  print(f'held-out bits/byte: model {model_bpb:.3f}, add-one bigram {bigram:.3f}, '
        f'uniform over 256 bytes 8.000')
  return 0 if model_bpb < bigram else 1


if __name__ == '__main__':
  sys.exit(main())
