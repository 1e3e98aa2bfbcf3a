"""A tiny synthetic classification task for testing the learner in seconds.

Gaussian features [B, F], labels from a fixed random linear map (argmax), a Haiku MLP with
dropout and a bit of Haiku state (an EMA of the input mean). Two debugging knobs:
data.nan_at_step puts a NaN into one training batch, data.sleep_s slows each batch down.

Not listed for users: tests register it (`tasks.register('toy', 'perceiver_agents.tasks.toy')`).
"""

import time

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from perceiver_agents.data import sampling
from perceiver_agents.learner.config import default_config
from perceiver_agents.tasks.base import Task


# The small variant (--config.preset=local, tasks/base.py).
PRESETS = {'local': (
    'model.hidden=8', 'data.num_train=64', 'data.num_eval=32', 'train.batch_size=8',
    'train.steps=20', 'train.log_every=10', 'eval.every=0', 'checkpoint.every=0')}


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.train.steps = 100
  config.train.batch_size = 32
  config.train.log_every = 10
  config.train.progress_bar = False
  config.eval.every = 50
  config.eval.batch_size = 64
  config.checkpoint.every = 50
  config.optimizer.learning_rate = 1e-2
  config.optimizer.warmup_steps = 10

  config.model = ml_collections.ConfigDict()
  config.model.hidden = 32
  config.model.dropout = 0.1

  config.data = ml_collections.ConfigDict()
  config.data.num_features = 8
  config.data.num_classes = 4
  config.data.num_train = 512
  config.data.num_eval = 200
  config.data.nan_at_step = -1   # >= 0: that step's batch holds a NaN.
  config.data.sleep_s = 0.0      # Seconds to wait per training batch.
  return config


def _dataset(num: int, config: ml_collections.ConfigDict, which: int) -> dict:
  d = config.data
  teacher = np.random.default_rng([config.seed, 0]).normal(size=(d.num_features, d.num_classes))
  x = np.random.default_rng([config.seed, which]).normal(
      size=(num, d.num_features)).astype(np.float32)
  return {'x': x, 'label': np.argmax(x @ teacher, axis=-1).astype(np.int32)}


def build(config: ml_collections.ConfigDict) -> Task:
  train, test = _dataset(config.data.num_train, config, 1), _dataset(config.data.num_eval, config, 2)

  def forward(batch, is_training: bool):
    """batch['x']: [B, F] -> logits [B, num_classes]."""
    x = batch['x']
    hk.ExponentialMovingAverage(0.9, name='input_mean')(jnp.mean(x))
    h = jax.nn.gelu(hk.Linear(config.model.hidden)(x))
    if is_training and config.model.dropout:
      h = hk.dropout(hk.next_rng_key(), config.model.dropout, h)
    h = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(h)
    return hk.Linear(config.data.num_classes)(h)

  def loss(logits, batch):
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])

  def metrics(logits, batch):
    return {'accuracy': (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)}

  def train_batch(step: int) -> dict:
    if config.data.sleep_s:
      time.sleep(config.data.sleep_s)
    idx = sampling.batch_indices(seed=config.seed, step=step,
                                 batch_size=config.train.batch_size,
                                 num_examples=config.data.num_train)
    batch = {k: v[idx] for k, v in train.items()}
    if step == config.data.nan_at_step:
      batch['x'] = batch['x'].copy()
      batch['x'][0, 0] = np.nan
    return batch

  return Task(model=hk.transform_with_state(forward), loss=loss, metrics=metrics,
              train_batch=train_batch,
              eval_batches=lambda size: sampling.sequential_batches(test, size))
