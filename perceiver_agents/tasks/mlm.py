"""Masked language modelling on UTF-8 bytes with the zoo's language Perceiver IO.

The model is `zoo.language_perceiver` -- DeepMind's parameter tree, output logits tied to
the byte embedding -- so DeepMind's released checkpoint and this task's checkpoints are
interchangeable. `--config.model.size=published` builds the published model (2048 bytes,
256 x 1280 latents, 26 self-attention layers, 201M params, `zoo.PUBLISHED`); otherwise the
`model.*` sizes build a smaller model of the same structure.

Masking is whole-word BERT masking on bytes: 15% of the real bytes, as whole words,
80% MASK / 10% random byte / 10% unchanged (perceiver_agents/data/text.py). The loss is the
cross-entropy at the selected bytes only; `masked_accuracy` is the fraction of selected
bytes predicted exactly (both per window, then averaged over windows).

Data (`data.source`):
  files          local UTF-8 text files, `--config.data.files=GLOB`; documents are lines
                 (`data.document_unit`: line | paragraph | file); a seeded
                 `data.eval_fraction` of whole documents is held out for evaluation.
  c4, wikipedia, c4+wikipedia
                 TFDS `c4/en` and `wikipedia/20230601.en`, streamed in order (mixed
                 document by document), packed into windows of `model.max_seq_len` bytes;
                 evaluation reads the first `data.eval_windows` windows of the eval splits.

    perceiver-agents train mlm --workdir runs/mlm --config.data.files='corpus/*.txt'
    perceiver-agents train mlm --workdir runs/mlm_c4 --config.data.source=c4+wikipedia \\
        --config.model.size=published
    perceiver-agents predict mlm --checkpoint runs/mlm --text 'The <mask:3> sat on the mat.'
    perceiver-agents predict mlm --checkpoint language_perceiver_io_bytes.pickle \\
        --text 'This is an incomplete sentence where some words are <mask:8>.'
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from perceiver_agents import zoo
from perceiver_agents.data import sampling
from perceiver_agents.data import text as text_data
from perceiver_agents.data import tfds_util
from perceiver_agents.learner.checkpoint import Checkpointer
from perceiver_agents.learner.config import apply_overrides, default_config
from perceiver_agents.tasks import pretrained
from perceiver_agents.tasks import workdir as workdir_lib
from perceiver_agents.tasks.base import CommandArgs, Task

SPLIT_SEED = 0        # Fixed: the held-out documents must not change with the run's seed.
EVAL_MASK_SEED = 1    # Fixed: the eval windows are masked once, the same in every run.
SOURCES = ('files', 'c4', 'wikipedia', 'c4+wikipedia')
TASK_NAME = 'mlm'


# The small variant (--config.preset=local, tasks/base.py): trains end to end in under a
# minute on 2 CPU cores.
PRESETS = {'local': (
    'model.max_seq_len=32', 'model.d_model=16', 'model.num_latents=4',
    'model.num_latent_channels=16', 'model.num_self_attends=1', 'model.qk_channels=8',
    'model.num_self_attend_heads=2', 'model.num_cross_attend_heads=2',
    'data.eval_windows=16', 'train.batch_size=4', 'eval.batch_size=4', 'train.steps=50',
    'train.log_every=10', 'eval.every=0', 'checkpoint.every=0')}


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.train.steps = 5000
  config.train.batch_size = 32
  config.train.log_every = 50
  config.eval.every = 1000
  config.eval.batch_size = 32
  config.checkpoint.every = 1000
  config.optimizer.name = 'adamw'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 200
  config.optimizer.weight_decay = 1e-2

  config.model = ml_collections.ConfigDict()
  config.model.size = 'small'       # 'small' (the fields below) or 'published' (201M).
  config.model.max_seq_len = 512    # T: bytes per window (published: 2048).
  config.model.d_model = 128        # Byte embedding / query channels (published: 768).
  config.model.num_latents = 64     # M (published: 256).
  config.model.num_latent_channels = 256  # D (published: 1280).
  config.model.num_self_attends = 4  # Latent self-attention layers (published: 26).
  config.model.num_self_attend_heads = 4  # (published: 8)
  config.model.num_cross_attend_heads = 4  # Encoder and decoder (published: 8).
  config.model.qk_channels = 64     # (published: 256)
  config.model.dropout = 0.0
  # Scales the byte embedding at init (Haiku's default: stddev 1). The logits are tied to
  # it, so stddev 1 starts at a cross-entropy of ~10+ nats; 0.02 (BERT's) trains faster
  # from scratch. Only affects fresh runs, never loaded checkpoints.
  config.model.embed_init_scale = 0.02

  config.data = ml_collections.ConfigDict()
  config.data.source = 'files'      # One of SOURCES.
  config.data.files = ''            # Glob of UTF-8 text files (source 'files').
  config.data.document_unit = 'line'  # line | paragraph | file.
  config.data.eval_fraction = 0.1   # Held-out documents (source 'files').
  config.data.eval_windows = 64     # Eval windows read from the TFDS eval splits.
  config.data.data_dir = ''         # Where the TFDS sources are prepared ('' = default).
  config.data.mask_rate = text_data.MASK_RATE
  return config


# -------------------------------------------------------------------------------------
# Model
# -------------------------------------------------------------------------------------


def model_kwargs(model_config: ml_collections.ConfigDict) -> dict:
  """Keyword arguments of `zoo.language_perceiver` for `config.model`."""
  m = model_config
  if m.size not in ('small', 'published'):
    raise ValueError(f"model.size must be 'small' or 'published', got {m.size!r}.")
  if m.size == 'published':
    return copy.deepcopy(zoo.PUBLISHED['language_perceiver'][1])
  for name in ('max_seq_len', 'd_model', 'num_latents', 'num_latent_channels',
               'num_self_attends', 'num_self_attend_heads', 'num_cross_attend_heads',
               'qk_channels'):
    if m[name] < 1:
      raise ValueError(f'model.{name}: expected a positive int, got {m[name]}.')
  d = m.num_latent_channels
  encoder = dict(num_self_attends_per_block=m.num_self_attends, num_blocks=1,
                 z_index_dim=m.num_latents, num_z_channels=d,
                 num_self_attend_heads=m.num_self_attend_heads,
                 num_cross_attend_heads=m.num_cross_attend_heads,
                 qk_channels=m.qk_channels, v_channels=d, use_query_residual=True,
                 cross_attend_widening_factor=1, self_attend_widening_factor=1,
                 dropout_prob=m.dropout)
  decoder = dict(output_num_channels=d, position_encoding_type='trainable',
                 output_index_dims=m.max_seq_len, num_z_channels=d,
                 qk_channels=m.qk_channels, v_channels=m.d_model,
                 num_heads=m.num_cross_attend_heads, final_project=False,
                 use_query_residual=False,
                 trainable_position_encoding_kwargs=dict(num_channels=m.d_model))
  return dict(max_seq_len=m.max_seq_len, d_model=m.d_model, encoder=encoder,
              decoder=decoder)


def window_length(model_config: ml_collections.ConfigDict) -> int:
  return model_kwargs(model_config)['max_seq_len']


def make_model(model_config: ml_collections.ConfigDict) -> hk.TransformedWithState:
  """The zoo's language model as the learner's `apply(params, state, rng, batch, ...)`.

  batch: inputs int32 [B, T], input_mask bool [B, T] -> logits [B, T, 262]. The params
  are exactly `zoo.language_perceiver`'s (no state).
  """
  lm = zoo.language_perceiver(**model_kwargs(model_config))
  scale = model_config.get('embed_init_scale', 1.0)

  def init(rng, batch, is_training=True):
    params = lm.init(rng, batch['inputs'], batch['input_mask'], is_training=is_training)
    params = dict(params, embed={'embeddings': params['embed']['embeddings'] * scale})
    return params, {}

  def apply(params, state, rng, batch, is_training=False):
    return lm.apply(params, rng, batch['inputs'], batch['input_mask'],
                    is_training=is_training), state

  return hk.TransformedWithState(init, apply)


def masked_loss(logits, batch):
  """Per-window cross-entropy [B], averaged over the selected (weight 1) bytes only."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets'])  # [B, T]
  weights = batch['weights'].astype(jnp.float32)
  return jnp.sum(ce * weights, -1) / jnp.maximum(jnp.sum(weights, -1), 1.0)


def masked_metrics(logits, batch):
  """masked_accuracy [B]: exact-byte accuracy at the selected bytes of each window."""
  weights = batch['weights'].astype(jnp.float32)
  correct = (jnp.argmax(logits, -1) == batch['targets']).astype(jnp.float32)
  return {'masked_accuracy': jnp.sum(correct * weights, -1) /
                             jnp.maximum(jnp.sum(weights, -1), 1.0)}


# -------------------------------------------------------------------------------------
# Data
# -------------------------------------------------------------------------------------


def _tfds_streams(source: str, which: int, data_dir: str) -> list:
  names = source.split('+')
  return [lambda n=n: text_data.tfds_documents(text_data.TFDS_SOURCES[n][0],
                                               text_data.TFDS_SOURCES[n][which],
                                               data_dir=data_dir)
          for n in names]


def _check_prepared(source: str, data_dir: str) -> None:
  """Every TFDS split that `source` streams is prepared (else one clear ValueError)."""
  for n in source.split('+'):
    name, train, evaluation = text_data.TFDS_SOURCES[n]
    for split in (train, evaluation):
      tfds_util.load(name, split=split, data_dir=data_dir, flag='data.data_dir')


def build(config: ml_collections.ConfigDict) -> Task:
  d = config.data
  if d.source not in SOURCES:
    raise ValueError(f'data.source: expected one of {SOURCES}, got {d.source!r}.')
  window = window_length(config.model)
  batch_size = config.train.batch_size
  mask_kwargs = dict(mask_rate=d.mask_rate)

  if d.source == 'files':
    if not d.files:
      raise ValueError("data.files: empty; give a glob of UTF-8 text files "
                       "(--config.data.files='corpus/*.txt') or choose "
                       f"--config.data.source from {SOURCES[1:]}.")
    documents = text_data.read_text_files(d.files, unit=d.document_unit)
    train_docs, eval_docs = text_data.split_by_document(
        documents, eval_fraction=d.eval_fraction, seed=SPLIT_SEED)
    train_windows = text_data.pack_all(train_docs, window)  # [N, T]
    eval_windows = text_data.pack_all(eval_docs, window)

    def windows_of_step(step):
      idx = sampling.batch_indices(seed=config.seed, step=step, batch_size=batch_size,
                                   num_examples=len(train_windows))
      return train_windows[idx]
  else:
    _check_prepared(d.source, d.data_dir)
    streams = _tfds_streams(d.source, 1, d.data_dir)
    stream = text_data.WindowStream(lambda: text_data.interleave(streams), window=window,
                                    batch_size=batch_size)
    windows_of_step = stream.batch
    eval_iter = text_data.pack_documents(
        text_data.interleave(_tfds_streams(d.source, 2, d.data_dir)), window)
    eval_windows = [w for _, w in zip(range(d.eval_windows), eval_iter)]
    if not eval_windows:
      raise ValueError(f'data.source={d.source!r}: the eval splits hold no text.')
    eval_windows = np.stack(eval_windows)

  eval_set = text_data.mask_batch(eval_windows, np.random.default_rng(EVAL_MASK_SEED),
                                  **mask_kwargs)

  def train_batch(step: int) -> dict:
    return text_data.mask_batch(windows_of_step(step), sampling.step_rng(config.seed, step),
                                **mask_kwargs)

  return Task(model=make_model(config.model), loss=masked_loss, metrics=masked_metrics,
              train_batch=train_batch,
              eval_batches=lambda size: sampling.sequential_batches(eval_set, size))


# -------------------------------------------------------------------------------------
# Checkpoints: this task's workdirs and DeepMind's released file
# -------------------------------------------------------------------------------------


def _find_run_dir(path: str) -> str | None:
  """The workdir (holding run.json) at `path` or up to two levels above it."""
  path = os.path.abspath(path)
  for candidate in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
    if os.path.isfile(os.path.join(candidate, 'run.json')):
      return candidate
  return None


def restore_params(checkpoint_dir: str, step: int | None = None) -> tuple[dict, int]:
  """Params (numpy, Haiku tree) and step of a learner checkpoint under `checkpoint_dir`
  (a workdir's `checkpoints/`): the newest intact step (damaged ones are skipped with a
  warning) unless `step` is given."""
  checkpoint_dir = os.path.abspath(checkpoint_dir)
  if not os.path.isdir(checkpoint_dir):  # Checkpointer would create it.
    raise ValueError(f'--checkpoint: no checkpoint in {checkpoint_dir}; train first.')
  checkpoints = Checkpointer(checkpoint_dir)
  try:
    steps = checkpoints.all_steps()
    if not steps:
      raise ValueError(f'--checkpoint: no checkpoint in {checkpoint_dir}; train first.')
    if step is None:
      step, saved = checkpoints.restore_latest(warn=workdir_lib.warn)
    elif step not in steps:
      raise ValueError(f'--checkpoint: no checkpoint of step {step} in '
                       f'{checkpoint_dir} (steps: {steps}).')
    else:
      saved = checkpoints.restore_as_saved(step=step)
  finally:
    checkpoints.close()
  print(f'perceiver-agents: using checkpoint {step} of {checkpoint_dir}', file=sys.stderr)
  return jax.tree.map(np.asarray, saved['params']), step


def task_config_of_run(run_dir: str, task: str) -> ml_collections.ConfigDict:
  """`task`'s config with the overrides a workdir's run was trained with."""
  from perceiver_agents import tasks  # pylint: disable=g-import-not-at-top
  return workdir_lib.run_config(tasks.get(task), run_dir, task=task)


def check_params_match(params: dict, model_config: ml_collections.ConfigDict, *,
                       source: str) -> None:
  """Raises ValueError naming the first parameter of `params` whose path or shape differs
  from the model that `model_config` builds (shapes only: nothing is computed)."""
  window = window_length(model_config)
  sample = {'inputs': jax.ShapeDtypeStruct((1, window), jnp.int32),
            'input_mask': jax.ShapeDtypeStruct((1, window), jnp.bool_)}
  expected, _ = jax.eval_shape(make_model(model_config).init, jax.random.PRNGKey(0),
                               sample)
  for module, leaves in expected.items():
    for name, leaf in leaves.items():
      got = params.get(module, {}).get(name)
      if got is None:
        raise ValueError(f'--checkpoint: {source} has no parameter {module}/{name}.')
      if tuple(np.shape(got)) != tuple(leaf.shape):
        raise ValueError(f'--checkpoint: {source}: {module}/{name} is '
                         f'{tuple(np.shape(got))}, the model needs {tuple(leaf.shape)}.')


def _load_transformers(path: str) -> tuple[dict, ml_collections.ConfigDict, str]:
  """(params, config, description) of a transformers PerceiverForMaskedLM folder.

  The model runs as this task builds it (the published tanh GELU); its sizes come from
  the folder's config.json and must be ones `model.*` can express.
  """
  from perceiver_agents import convert  # pylint: disable=g-import-not-at-top
  from perceiver_agents.convert import hf_config  # pylint: disable=g-import-not-at-top
  converted = convert.from_transformers(path)
  if converted.name != 'language_perceiver':
    raise ValueError(f'--checkpoint: {path} holds a transformers '
                     f'{converted.config.get("architectures")}, not PerceiverForMaskedLM.')
  config = get_config()
  want = hf_config.canonical(converted.name, converted.kwargs)
  published = zoo.PUBLISHED['language_perceiver'][1]
  is_published = want == hf_config.canonical(converted.name, published)
  config.model.size = 'published' if is_published else 'small'
  if not is_published:
    m, encoder = config.model, converted.kwargs['encoder']
    m.max_seq_len, m.d_model = converted.kwargs['max_seq_len'], converted.kwargs['d_model']
    m.num_latents, m.num_latent_channels = encoder['z_index_dim'], encoder['num_z_channels']
    m.num_self_attends = encoder['num_self_attends_per_block']
    m.num_self_attend_heads = encoder['num_self_attend_heads']
    m.num_cross_attend_heads = encoder['num_cross_attend_heads']
    m.qk_channels = encoder['qk_channels'] or 0
    got = hf_config.canonical(converted.name, model_kwargs(m))
    differ = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    if differ:
      raise ValueError(f'--checkpoint: {path}: the mlm task cannot build this model '
                       '(it ties the decoder to the encoder\'s heads and qk_channels); '
                       'differs in ' + ', '.join(
                           f'{k}={want.get(k)!r} (task: {got.get(k)!r})' for k in differ))
  check_params_match(converted.params, config.model, source=f'transformers folder {path}')
  return converted.params, config, f'transformers PerceiverForMaskedLM (folder {path})'


def load_mlm_params(path: str) -> tuple[dict, ml_collections.ConfigDict, str]:
  """(params, config, description) of an MLM checkpoint.

  `path` is either a workdir of `train mlm` (or its checkpoints/ or checkpoints/<step>/
  folder), a DeepMind released checkpoint file (.pystate/.pickle), whose model is
  the published configuration, or a transformers PerceiverForMaskedLM folder.
  """
  if not os.path.exists(path):
    raise ValueError(f'--checkpoint: {path} does not exist.')
  if os.path.isfile(path):
    try:
      params = zoo.load_checkpoint(path)
    except ValueError as e:
      raise ValueError(f'--checkpoint: {path} is not a DeepMind checkpoint file: {e}') \
          from None
    if 'embed' not in params or 'embedding_decoder' not in params:
      raise ValueError(f'--checkpoint: {path} is a DeepMind checkpoint but not of the '
                       'language model (no embed/embedding_decoder params).')
    config = get_config()
    config.model.size = 'published'
    check_params_match(params, config.model, source=f'{path} (DeepMind file: the '
                       'published language model)')
    return params, config, f'DeepMind released language checkpoint (file {path})'
  if pretrained.is_transformers_dir(path):
    return _load_transformers(path)
  run_dir = _find_run_dir(path)
  if run_dir is None:
    raise ValueError(f'--checkpoint: {path} is a folder but not a workdir of '
                     '`perceiver-agents train mlm` (no run.json in it or above it).')
  config = task_config_of_run(run_dir, TASK_NAME)
  step = None
  base = os.path.basename(os.path.normpath(path))
  if base.isdigit():
    step = int(base)
  params, step = restore_params(os.path.join(run_dir, 'checkpoints'), step)
  check_params_match(params, config.model, source=f'workdir {run_dir}')
  return params, config, f'project checkpoint of `train mlm` (workdir {run_dir}, step {step})'


# -------------------------------------------------------------------------------------
# Fill-mask
# -------------------------------------------------------------------------------------

_MASK_MARKER = re.compile(r'<mask(?::(\d+))?>')


def parse_masked_text(text: str, *, window: int, truncate: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Ids int32 [T'] of `text` with each `<mask:N>` (N bytes; `<mask>` = 1) as MASK ids,
  and which positions are masked, bool [T'].

  Raises ValueError for empty text, text that is not UTF-8-encodable, no mask markers, or
  more than `window` bytes (unless `truncate`: then the bytes past the window are cut).
  """
  if not text:
    raise ValueError('--text: empty; give text with <mask:N> markers.')
  pieces = []
  last = 0
  for match in _MASK_MARKER.finditer(text):
    pieces.append(_utf8_ids(text[last:match.start()]))
    n = int(match.group(1) or 1)
    if n < 1:
      raise ValueError(f'--text: {match.group(0)} masks no bytes; use N >= 1.')
    pieces.append(np.full([n], text_data.TOKENIZER.mask_token, np.int32))
    last = match.end()
  pieces.append(_utf8_ids(text[last:]))
  ids = np.concatenate(pieces).astype(np.int32)
  is_masked = ids == text_data.TOKENIZER.mask_token
  if not is_masked.any():
    raise ValueError('--text: no <mask:N> marker; mark the bytes to fill, e.g. '
                     "'The <mask:3> sat on the mat.'")
  if ids.size > window:
    if not truncate:
      raise ValueError(f'--text: {ids.size} bytes, longer than the model\'s window of '
                       f'{window} bytes; shorten it or pass --truncate to keep the first '
                       f'{window} bytes.')
    ids, is_masked = ids[:window], is_masked[:window]
    if not is_masked.any():
      raise ValueError(f'--text: all <mask:N> markers lie past the first {window} bytes.')
  return ids, is_masked


def _utf8_ids(text: str) -> np.ndarray:
  try:
    return text_data.encode(text.encode('utf-8'))
  except UnicodeEncodeError as e:
    raise ValueError(f'--text: not valid UTF-8 near character {e.start} (undecodable '
                     'bytes on the command line?); pass the text as a UTF-8 file with '
                     '--text-file.') from None


def fill_mask(params: Any, model_config: ml_collections.ConfigDict,
              texts: list[str], *, truncate: bool = False) -> list[str]:
  """Each text with its `<mask:N>` bytes replaced by the model's most likely bytes."""
  window = window_length(model_config)
  parsed = [parse_masked_text(t, window=window, truncate=truncate) for t in texts]
  ids, input_mask = text_data.TOKENIZER.pad_batch([p[0] for p in parsed], window)
  model = make_model(model_config)
  logits, _ = jax.jit(lambda p, b: model.apply(p, {}, None, b, is_training=False))(
      params, {'inputs': ids, 'input_mask': input_mask})
  logits = np.asarray(logits)[..., text_data.TOKENIZER.num_reserved_tokens:]  # bytes only
  predicted = np.argmax(logits, -1) + text_data.TOKENIZER.num_reserved_tokens  # [B, T]
  outputs = []
  for i, (row, is_masked) in enumerate(parsed):
    filled = np.where(is_masked, predicted[i, :len(row)], row)
    outputs.append(text_data.TOKENIZER.to_string(filled))
  return outputs


def predict(command: CommandArgs) -> int:
  """`perceiver-agents predict mlm --checkpoint PATH --text '... <mask:N> ...'`."""
  parser = argparse.ArgumentParser(
      prog='perceiver-agents predict mlm',
      description='Fill masked byte spans: <mask:N> marks N bytes to predict.')
  parser.add_argument('--text', action='append', default=[],
                      help="text with <mask:N> markers (repeatable)")
  parser.add_argument('--text-file', action='append', default=[],
                      help='UTF-8 file whose whole content is one text with markers')
  parser.add_argument('--truncate', action='store_true',
                      help='cut texts longer than the model window instead of failing')
  parsed = parser.parse_args(command.args)
  checkpoint = command.require_checkpoint(
      "workdir of `train mlm`, DeepMind's .pystate/.pickle file, or a transformers "
      'PerceiverForMaskedLM folder')
  command.refuse_overrides('predict mlm takes the model from the checkpoint')
  texts = list(parsed.text)
  for path in parsed.text_file:
    if not os.path.isfile(path):
      raise ValueError(f'--text-file: {path} does not exist.')
    with open(path, 'rb') as f:
      texts.append(text_data.decode_utf8(f.read(), source=f'--text-file {path}'))
  if not texts:
    parser.error('give at least one --text or --text-file')
  params, config, description = load_mlm_params(checkpoint)
  print(f'Loaded {description}.', file=sys.stderr)
  for text, filled in zip(texts, fill_mask(params, config.model, texts,
                                           truncate=parsed.truncate)):
    print(json.dumps({'text': text, 'filled': filled}, ensure_ascii=False))
  return 0
