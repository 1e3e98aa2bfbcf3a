"""Copy task for Perceiver AR: retrieve a random sequence from the far end of the context.

Each example is N + 1 tokens (N = model.max_context):

    [source: S random symbols] [filler ...] [SEP] [copy: the same S symbols]

The model reads the first N and its M latents (the last M positions, M >= S) predict the
next token; loss and metrics count only the S copied tokens. The source sits at the very
start, so every copied token must be fetched across N - S positions by the causal
cross-attention. Filler is PAD (data.filler='pad') or random symbols ('random').

    perceiver-agents train copy --workdir /tmp/copy                   # N=8192, see BENCHMARKS.md
    perceiver-agents train copy --workdir /tmp/c --config.model.max_context=512 \
        --config.train.steps=200                                       # quick look
"""

import haiku as hk
import ml_collections
import numpy as np

from perceiver_agents.data import sampling
from perceiver_agents.learner.config import default_config
from perceiver_agents.tasks import ar_lm
from perceiver_agents.tasks.base import Task

PAD, SEP = 0, 1
NUM_SPECIAL = 2
FILLERS = ('pad', 'random')



# The small variant (--config.preset=local, tasks/base.py): trains end to end in under a
# minute on 2 CPU cores.
PRESETS = {'local': (
    'model.max_context=32', 'model.num_latents=8', 'model.num_channels=16',
    'model.num_heads=2', 'model.num_cross_heads=1', 'data.copy_length=6',
    'data.num_eval=8', 'train.batch_size=4', 'eval.batch_size=8', 'train.steps=100',
    'train.log_every=10', 'eval.every=0', 'checkpoint.every=0')}


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.train.steps = 600
  config.train.batch_size = 8
  config.train.log_every = 20
  config.eval.every = 200
  config.eval.batch_size = 32
  config.checkpoint.every = 200
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 50
  config.optimizer.weight_decay = 0.0

  config.model = ar_lm.model_config()
  config.model.max_context = 8192
  config.model.num_latents = 64
  config.model.num_channels = 64
  config.model.num_heads = 4
  config.model.num_cross_heads = 4
  config.model.num_layers = 1
  config.model.widening_factor = 2
  # Rotary on every channel: the copy offset N - S is the same for all latents, which
  # relative positions express directly (half-rotary left one latent stuck; BENCHMARKS.md).
  config.model.rotary_fraction = 1.0

  config.data = ml_collections.ConfigDict()
  config.data.num_symbols = 8      # Random symbols drawn uniformly (ids 2 .. 2 + num - 1).
  config.data.copy_length = 64     # S <= model.num_latents.
  config.data.filler = 'pad'       # 'pad' or 'random'.
  config.data.num_eval = 64
  return config


def vocab_size(config: ml_collections.ConfigDict) -> int:
  return NUM_SPECIAL + config.data.num_symbols


def check_config(config: ml_collections.ConfigDict) -> None:
  d, m = config.data, config.model
  if d.num_symbols < 1:
    raise ValueError(f'data.num_symbols must be >= 1, got {d.num_symbols}.')
  if d.filler not in FILLERS:
    raise ValueError(f'data.filler must be one of {FILLERS}, got {d.filler!r}.')
  if not 1 <= d.copy_length <= m.num_latents:
    raise ValueError(f'data.copy_length ({d.copy_length}) must be between 1 and '
                     f'model.num_latents ({m.num_latents}): the loss counts only copied '
                     f'tokens predicted by latents.')
  if 2 * d.copy_length + 1 > m.max_context + 1:
    raise ValueError(f'data.copy_length ({d.copy_length}) is too long for '
                     f'model.max_context ({m.max_context}): need 2 * S + 1 <= N + 1.')


def make_examples(rng: np.random.Generator, num: int,
                  config: ml_collections.ConfigDict) -> dict:
  """`num` examples as the batch dict (inputs [num, N], targets/weights [num, M])."""
  d, m = config.data, config.model
  n, s, num_latents = m.max_context, d.copy_length, m.num_latents
  seq = np.full((num, n + 1), PAD, np.int32)
  if d.filler == 'random':
    seq[:] = rng.integers(NUM_SPECIAL, NUM_SPECIAL + d.num_symbols, size=seq.shape)
  source = rng.integers(NUM_SPECIAL, NUM_SPECIAL + d.num_symbols, size=(num, s))
  seq[:, :s] = source
  seq[:, n - s] = SEP
  seq[:, n + 1 - s:] = source
  weights = np.zeros((num, num_latents), np.float32)
  weights[:, num_latents - s:] = 1.0  # Latent i predicts position N - M + 1 + i.
  return {'inputs': seq[:, :n], 'targets': seq[:, n + 1 - num_latents:],
          'weights': weights}


def build(config: ml_collections.ConfigDict) -> Task:
  check_config(config)
  eval_set = make_examples(np.random.default_rng([config.seed, 2**31 - 1]),
                           config.data.num_eval, config)

  def metrics(logits, batch):
    acc = ar_lm.accuracy(logits, batch)
    return {'copy_accuracy': acc, 'sequence_accuracy': (acc == 1.0).astype(acc.dtype)}

  def train_batch(step: int) -> dict:
    return make_examples(sampling.step_rng(config.seed, step), config.train.batch_size,
                         config)

  model: hk.TransformedWithState = ar_lm.build_model(config,
                                                      vocab_size=vocab_size(config))
  return Task(model=model, loss=ar_lm.loss, metrics=metrics, train_batch=train_batch,
              eval_batches=lambda size: sampling.sequential_batches(eval_set, size))
