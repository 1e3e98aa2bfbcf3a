"""Does `train mlm` learn? A small byte-level MLM on real English vs a unigram baseline.

Corpus: gensim's test corpus `lee_background.cor` (300 English news articles from the
Lee et al. document-similarity data, one per line, 360 KB, shipped in the gensim wheel:
`pip install gensim`). The task's own split holds out 10% of the articles (30 documents,
seeded, never trained on); eval windows are masked once with the task's fixed eval seed.

Trains through the learner exactly as `perceiver-agents train mlm` does, restores the
final checkpoint from the workdir, and reports on the held-out windows:
  * model masked-byte accuracy and cross-entropy (micro-averaged over all masked bytes);
  * the unigram baseline: always predict the most frequent byte among the maskable (word)
    bytes of the training windows, and its cross-entropy under the training unigram
    distribution of those bytes.

Default model (small, same structure as the published one): 32-byte windows, 32 x 128
latents, 2 latent self-attention layers, d_model 64; AdamW 3e-3, batch 32, 4000 steps.

    python benchmarks/mlm.py                       # the recorded run (BENCHMARKS.md)
    python benchmarks/mlm.py --steps 50            # a quick look
"""

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np


def corpus_path() -> str:
  try:
    import gensim  # pylint: disable=g-import-not-at-top
  except ImportError:
    sys.exit('benchmarks/mlm.py needs gensim for its English corpus: pip install gensim')
  return os.path.join(os.path.dirname(gensim.__file__), 'test', 'test_data',
                      'lee_background.cor')


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=4000)
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--window', type=int, default=32)
  parser.add_argument('--lr', type=float, default=3e-3)
  parser.add_argument('--eval-every', type=int, default=1000)
  parser.add_argument('--d-model', type=int, default=64)
  parser.add_argument('--num-latents', type=int, default=32)
  parser.add_argument('--channels', type=int, default=128)
  parser.add_argument('--self-attends', type=int, default=2)
  parser.add_argument('--embed-init-scale', type=float, default=0.02)
  parser.add_argument('--workdir', default='')
  parser.add_argument('--out', default='', help='also write the results as JSON here')
  args = parser.parse_args()

  from perceiver_agents import learner  # pylint: disable=g-import-not-at-top
  from perceiver_agents.data import text as text_data  # pylint: disable=g-import-not-at-top
  from perceiver_agents.tasks import mlm  # pylint: disable=g-import-not-at-top
  from perceiver_agents.tasks import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  overrides = [f'data.files={corpus_path()}', 'data.document_unit=line',
               f'train.steps={args.steps}', f'train.batch_size={args.batch_size}',
               'eval.batch_size=64', f'model.max_seq_len={args.window}',
               f'model.d_model={args.d_model}', f'model.num_latents={args.num_latents}',
               f'model.num_latent_channels={args.channels}',
               f'model.num_self_attends={args.self_attends}', 'model.qk_channels=32',
               f'model.embed_init_scale={args.embed_init_scale}',
               f'optimizer.learning_rate={args.lr}', 'optimizer.warmup_steps=50',
               f'eval.every={args.eval_every}',
               f'checkpoint.every={args.steps}', 'train.log_every=50']
  config = learner.apply_overrides(mlm.get_config(), overrides)
  workdir = args.workdir or tempfile.mkdtemp(prefix='mlm_bench_')
  os.makedirs(workdir, exist_ok=True)
  workdir_lib.record_run(workdir, task='mlm', command='train', new=overrides,  # as `train
                         overrides=overrides)  # mlm` records it, so `predict mlm` reads it
  task = mlm.build(config)

  # Unigram baseline from the training windows' maskable bytes.
  documents = text_data.read_text_files(config.data.files, unit='line')
  train_docs, eval_docs = text_data.split_by_document(
      documents, eval_fraction=config.data.eval_fraction, seed=mlm.SPLIT_SEED)
  train_ids = text_data.pack_all(train_docs, args.window).reshape(-1)
  maskable = np.zeros(train_ids.shape, bool)
  for s, e in text_data.word_spans(train_ids):
    maskable[s:e] = True
  counts = np.bincount(train_ids[maskable], minlength=262).astype(np.float64)
  probs = (counts + 1.0) / (counts + 1.0).sum()  # add-one smoothing
  top = int(counts.argmax())
  eval_targets = np.concatenate([b['targets'][b['weights'] > 0]
                                 for b in task.eval_batches(64)])
  print(f'unigram baseline on held-out masked bytes: accuracy '
        f'{float((eval_targets == top).mean()):.4f}', flush=True)

  t0 = time.perf_counter()
  result = learner.train(task, config, workdir)
  train_s = time.perf_counter() - t0
  params, step = mlm.restore_params(os.path.join(workdir, 'checkpoints'))

  # Model on the held-out windows, micro-averaged over masked bytes.
  model = mlm.make_model(config.model)
  apply = jax.jit(lambda p, b: model.apply(p, {}, None, b, is_training=False)[0])
  correct = ce_sum = count = 0.0
  targets_all = []
  for batch in task.eval_batches(64):
    logits = np.asarray(apply(params, batch), np.float64)  # [B, T, V]
    w = batch['weights'] > 0
    log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    tgt = batch['targets']
    correct += float(((logits.argmax(-1) == tgt) & w).sum())
    ce_sum += float(-np.take_along_axis(log_probs, tgt[..., None], -1)[..., 0][w].sum())
    count += float(w.sum())
    targets_all.append(tgt[w])
  targets_all = np.concatenate(targets_all)

  results = {
      'corpus': 'gensim lee_background.cor', 'train_documents': len(train_docs),
      'eval_documents': len(eval_docs), 'eval_masked_bytes': int(count),
      'steps': int(step), 'batch_size': args.batch_size, 'window': args.window,
      'train_seconds': round(train_s, 1),
      'model_masked_accuracy': correct / count,
      'model_masked_ce_nats': ce_sum / count,
      'unigram_byte': bytes([top - 6]).decode('latin-1'),
      'unigram_masked_accuracy': float((targets_all == top).mean()),
      'unigram_masked_ce_nats': float(-np.log(probs[targets_all]).mean()),
      'learner_eval': result.eval_metrics,
  }
  print(json.dumps(results, indent=2))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(results, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
