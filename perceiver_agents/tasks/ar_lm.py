"""What the Perceiver AR tasks (copy, byte_lm) share: model config, model, loss, metrics,
and loading a trained run for generation.

A batch holds
  inputs   int32 [B, N]    the context,
  targets  int32 [B, M]    targets[:, i] is the token after position N - M + i,
  weights  float32 [B, M]  1 where a target counts in the loss and metrics, else 0.
"""

from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import optax

from perceiver_agents.blocks.ar_generation import Generator
from perceiver_agents.blocks.perceiver_ar import PerceiverAR


def model_config() -> ml_collections.ConfigDict:
  """The `model` section: keyword arguments of blocks.PerceiverAR (see its docstring)."""
  m = ml_collections.ConfigDict()
  m.max_context = 1024
  m.num_latents = 256
  m.num_channels = 128
  m.num_heads = 4
  m.num_cross_heads = 4
  m.num_layers = 2
  m.widening_factor = 4
  m.rotary_fraction = 0.5
  m.context_dropout = 0.0
  m.dropout_prob = 0.0
  m.use_remat = False
  return m


def model_kwargs(config: ml_collections.ConfigDict, *, vocab_size: int) -> dict:
  return dict(vocab_size=vocab_size, **config.model.to_dict())


def build_model(config: ml_collections.ConfigDict, *,
                vocab_size: int) -> hk.TransformedWithState:
  """batch -> logits [B, M, V] as the learner wants it (apply(params, state, rng, ...))."""
  kwargs = model_kwargs(config, vocab_size=vocab_size)

  def forward(batch, is_training: bool):
    return PerceiverAR(**kwargs)(batch['inputs'], is_training=is_training)

  return hk.transform_with_state(forward)


def loss(logits, batch):
  """Mean cross-entropy (nats) over the weighted targets of each example: [B]."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets'])  # [B, M]
  w = batch['weights']
  return jnp.sum(ce * w, axis=-1) / jnp.maximum(jnp.sum(w, axis=-1), 1.0)


def accuracy(logits, batch):
  """Per-example fraction of weighted targets predicted exactly (argmax): [B]."""
  correct = (jnp.argmax(logits, axis=-1) == batch['targets']).astype(jnp.float32)
  w = batch['weights']
  return jnp.sum(correct * w, axis=-1) / jnp.maximum(jnp.sum(w, axis=-1), 1.0)


def load_generator(task_name: str, checkpoint: str, *,
                   max_latents: int = 0) -> tuple[Generator, ml_collections.ConfigDict]:
  """A Generator with the parameters of the latest checkpoint of a `train` run.

  Args:
    task_name: the registered task the run trained.
    checkpoint: the run's workdir (holding checkpoints/ and run.json).
    max_latents: latent cache slots for generation (0: the Generator's default).
  """
  # Imported here: tasks/__init__ imports nothing heavy, and the CLI imports tasks lazily.
  from perceiver_agents import tasks  # pylint: disable=g-import-not-at-top
  from perceiver_agents.tasks import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  if not workdir_lib.is_workdir(checkpoint):
    raise ValueError(f'--checkpoint: {checkpoint} is not a training workdir (no '
                     'checkpoints/ folder in it).')
  module = tasks.get(task_name)
  config = workdir_lib.run_config(module, checkpoint, task=task_name)
  task = module.build(config)
  params, _ = workdir_lib.restore(task.model, config, checkpoint, task.train_batch(0))
  params = jax.device_get(params)
  kwargs = model_kwargs(config, vocab_size=module.vocab_size(config))
  return Generator(kwargs, params, max_latents=max_latents or None), config


def params_count(params: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
