"""Byte-level language modelling with Perceiver AR (UTF-8 bytes, ids of BytesTokenizer).

Text comes from local files (data.source='files', the default) or TFDS `pg19`
(data.source='tfds'; needs the prepared dataset in data.data_dir). Files are read as
raw bytes and joined with newlines; with data.files empty, gensim's Lee news corpus
(gensim/test/test_data/lee_background.cor, ~360 kB of English, shipped with gensim) is
used. The last data.eval_fraction of the bytes is the held-out split (pg19: its
'validation' split). Training windows are N + 1 random consecutive bytes; evaluation slides
over the held-out bytes with stride M so every scored byte is predicted once, with N bytes of
context. The metric `bits_per_byte` is the loss in bits; `bigram_bits_per_byte` (below)
is the add-one smoothed bigram baseline on the same split and the same scored bytes.

    perceiver-agents train byte_lm --workdir /tmp/byte_lm
    perceiver-agents generate byte_lm --checkpoint /tmp/byte_lm --prompt "The Prime Minister"
"""

import argparse
import glob as glob_lib
import importlib.util
import math
import os
import sys

import haiku as hk
import jax
import ml_collections
import numpy as np

from perceiver_agents.blocks.ar_generation import check_sampling
from perceiver_agents.data import sampling
from perceiver_agents.data import tfds_util
from perceiver_agents.encoders.text import BytesTokenizer
from perceiver_agents.learner.config import default_config
from perceiver_agents.tasks import ar_lm
from perceiver_agents.tasks.base import CommandArgs, Task

TOKENIZER = BytesTokenizer()
SOURCES = ('files', 'tfds')


def vocab_size(config: ml_collections.ConfigDict) -> int:
  del config
  return TOKENIZER.vocab_size


# The small variant (--config.preset=local, tasks/base.py): trains end to end in under a
# minute on 2 CPU cores.
PRESETS = {'local': (
    'model.max_context=32', 'model.num_latents=8', 'model.num_channels=16',
    'model.num_heads=2', 'model.num_cross_heads=1', 'model.num_layers=1',
    'data.max_eval_windows=256', 'train.batch_size=4', 'eval.batch_size=16',
    'train.steps=100', 'train.log_every=10', 'eval.every=0', 'checkpoint.every=0')}


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.train.steps = 2000
  config.train.batch_size = 16
  config.train.log_every = 50
  config.eval.every = 500
  config.eval.batch_size = 32
  config.checkpoint.every = 500
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 100
  config.optimizer.weight_decay = 1e-2

  config.model = ar_lm.model_config()
  config.model.max_context = 512
  config.model.num_latents = 128
  config.model.num_channels = 128
  config.model.num_heads = 4
  config.model.num_cross_heads = 4
  config.model.num_layers = 3
  config.model.context_dropout = 0.1
  config.model.dropout_prob = 0.1

  config.data = ml_collections.ConfigDict()
  config.data.source = 'files'       # 'files' or 'tfds'.
  config.data.files = ''             # Comma-separated globs; '' = gensim's Lee corpus.
  config.data.eval_fraction = 0.1    # Held-out tail of the files' bytes.
  config.data.max_eval_windows = 0   # 0: score the whole held-out split.
  config.data.tfds_name = 'pg19'
  config.data.data_dir = ''          # Where TFDS data is prepared ('' = TFDS default).
  config.data.tfds_max_books = 50    # Books read per split (pg19 books are ~400 kB).
  return config


def default_corpus() -> str:
  """Path of gensim's lee_background.cor, or ValueError if gensim is not installed."""
  spec = importlib.util.find_spec('gensim')
  if spec is None or not spec.submodule_search_locations:
    raise ValueError('data.files is empty and gensim (whose test corpus is the default '
                     'text) is not installed: pip install gensim, or set data.files.')
  path = os.path.join(spec.submodule_search_locations[0], 'test', 'test_data',
                      'lee_background.cor')
  if not os.path.exists(path):
    raise ValueError(f'data.files: the default corpus {path} is missing.')
  return path


def read_files(patterns: str) -> bytes:
  """The bytes of all files matching the comma-separated globs, sorted, joined by '\\n'."""
  paths = []
  for pattern in [p.strip() for p in patterns.split(',') if p.strip()]:
    matched = sorted(glob_lib.glob(os.path.expanduser(pattern)))
    if not matched:
      raise ValueError(f'data.files: no file matches {pattern!r}.')
    paths.extend(p for p in matched if os.path.isfile(p))
  if not paths:
    raise ValueError(f'data.files: {patterns!r} names no files.')
  chunks = []
  for path in paths:
    with open(path, 'rb') as f:
      chunks.append(f.read())
  return b'\n'.join(chunks)


def _tfds_bytes(config: ml_collections.ConfigDict, split: str) -> bytes:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  d = config.data
  ds = tfds_util.load(d.tfds_name, split=f'{split}[:{d.tfds_max_books}]',
                      data_dir=d.data_dir, flag='data.data_dir')
  return b'\n'.join(bytes(ex['book_text']) for ex in tfds.as_numpy(ds))


def load_splits(config: ml_collections.ConfigDict) -> dict:
  """{'train': ids int32 [T1], 'eval': ids int32 [T2]} (BytesTokenizer ids)."""
  d = config.data
  if d.source not in SOURCES:
    raise ValueError(f'data.source must be one of {SOURCES}, got {d.source!r}.')
  if d.source == 'tfds':
    train, held_out = _tfds_bytes(config, 'train'), _tfds_bytes(config, 'validation')
  else:
    if not 0 < d.eval_fraction < 1:
      raise ValueError(f'data.eval_fraction must be in (0, 1), got {d.eval_fraction}.')
    data = read_files(d.files or default_corpus())
    cut = int(round(len(data) * (1 - d.eval_fraction)))
    train, held_out = data[:cut], data[cut:]
  n = config.model.max_context
  for name, part in (('train', train), ('held-out', held_out)):
    if len(part) < n + 1:
      raise ValueError(f'data: the {name} split has {len(part)} bytes, fewer than '
                       f'model.max_context + 1 = {n + 1}; give more text.')
  return {'train': TOKENIZER.to_int(train), 'eval': TOKENIZER.to_int(held_out)}


def windows(ids: np.ndarray, starts: np.ndarray, *, context: int,
            num_latents: int) -> dict:
  """Batch of windows ids[s : s + N + 1] for each start s: inputs, targets, weights."""
  seq = ids[starts[:, None] + np.arange(context + 1)]  # [B, N + 1]
  return {'inputs': seq[:, :context], 'targets': seq[:, context + 1 - num_latents:],
          'weights': np.ones((len(starts), num_latents), np.float32)}


def eval_starts(num_ids: int, *, context: int, num_latents: int,
                max_windows: int = 0) -> np.ndarray:
  """Window starts with stride M: every held-out id from position N + 1 - M on is scored
  once (up to a last partial stride)."""
  starts = np.arange(0, num_ids - context, num_latents)
  return starts[:max_windows] if max_windows else starts


def bigram_bits_per_byte(train_ids: np.ndarray, eval_set: dict) -> float:
  """Add-one smoothed byte bigram, fit on train_ids, in bits per scored byte of eval_set.

  The context of each scored target is the token just before it (the last input for the
  first target of a window).
  """
  k = TOKENIZER.num_reserved_tokens
  train = train_ids - k
  counts = np.ones((256, 256), np.float64)
  np.add.at(counts, (train[:-1], train[1:]), 1.0)
  log_probs = np.log2(counts / counts.sum(axis=1, keepdims=True))
  targets = eval_set['targets'] - k  # [W, M]
  previous = np.concatenate([eval_set['inputs'][:, -targets.shape[1]:][:, :1] - k,
                             targets[:, :-1]], axis=1)  # [W, M]
  return float(-np.mean(log_probs[previous, targets]))


def build(config: ml_collections.ConfigDict) -> Task:
  n, m = config.model.max_context, config.model.num_latents
  splits = load_splits(config)
  train_ids = splits['train']
  eval_set = windows(splits['eval'], eval_starts(len(splits['eval']), context=n,
                                                 num_latents=m,
                                                 max_windows=config.data.max_eval_windows),
                     context=n, num_latents=m)

  def metrics(logits, batch):
    return {'bits_per_byte': ar_lm.loss(logits, batch) / math.log(2),
            'accuracy': ar_lm.accuracy(logits, batch)}

  def train_batch(step: int) -> dict:
    rng = sampling.step_rng(config.seed, step)
    starts = rng.integers(0, len(train_ids) - n, size=config.train.batch_size)
    return windows(train_ids, starts, context=n, num_latents=m)

  model: hk.TransformedWithState = ar_lm.build_model(config, vocab_size=TOKENIZER.vocab_size)
  return Task(model=model, loss=ar_lm.loss, metrics=metrics, train_batch=train_batch,
              eval_batches=lambda size: sampling.sequential_batches(eval_set, size))


def generate(command: CommandArgs) -> int:
  """`perceiver-agents generate byte_lm --checkpoint WORKDIR --prompt TEXT [...]`."""
  parser = argparse.ArgumentParser(prog='perceiver-agents generate byte_lm',
                                   description='Continue a prompt with a trained byte_lm.')
  parser.add_argument('--prompt', required=True, help='text to continue (UTF-8)')
  parser.add_argument('--num-bytes', type=int, default=200, help='bytes to generate')
  parser.add_argument('--temperature', type=float, default=0.8, help='0 = greedy')
  parser.add_argument('--top-k', type=int, default=0, help='0 = off')
  parser.add_argument('--top-p', type=float, default=1.0, help='1 = off')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--max-latents', type=int, default=0,
                      help='latent cache slots (0: twice the model latents)')
  parsed = parser.parse_args(command.args)
  checkpoint = command.require_checkpoint('workdir of a byte_lm train run')
  command.refuse_overrides('generate takes the model from the run')
  prompt = TOKENIZER.to_int(parsed.prompt)
  if prompt.size == 0:
    raise ValueError('--prompt is empty; give at least one character.')
  if parsed.num_bytes < 1:
    raise ValueError(f'--num-bytes must be >= 1, got {parsed.num_bytes}.')
  check_sampling(temperature=parsed.temperature, top_k=parsed.top_k, top_p=parsed.top_p,
                 vocab_size=TOKENIZER.vocab_size)
  generator, _ = ar_lm.load_generator('byte_lm', checkpoint,
                                      max_latents=parsed.max_latents)
  if prompt.size > generator.max_context:
    raise ValueError(f'--prompt is {prompt.size} bytes, longer than the model context '
                     f'({generator.max_context} bytes).')
  result = generator.generate(prompt[None], num_tokens=parsed.num_bytes,
                              rng=jax.random.PRNGKey(parsed.seed),
                              temperature=parsed.temperature, top_k=parsed.top_k,
                              top_p=parsed.top_p)
  sys.stdout.write(parsed.prompt + TOKENIZER.to_string(result.tokens[0]) + '\n')
  return 0
