"""GLUE fine-tuning of the byte-level Perceiver IO, single- or multi-task.

The classifier is the MLM's input side and encoder with its decoder replaced by a
classification decoder (the paper's GLUE setup): one learned query per GLUE task
cross-attends into the latents, and task t's head (a linear layer, `<t>_head`) reads the
output of query t only. Fine-tuning on one task is the one-query case; multi-task
fine-tuning (`data.tasks=all`: the eight GLUE tasks, WNLI excluded as in the paper) trains
all queries and heads at once, each batch mixing tasks uniformly.

Inputs: [CLS] sentence1 [SEP] (sentence2 [SEP]) as UTF-8 byte ids (BytesTokenizer),
right-padded to `model.max_seq_len`. Longer inputs are truncated, documented behaviour:
bytes are cut from the end of the longer sentence until the whole input fits (this may
split a multi-byte character; the model reads bytes). Empty sentences are allowed.

Initialising from an MLM (`model.init_checkpoint`: a workdir of `train mlm`, or DeepMind's
released language checkpoint file) copies parameters by path. The model then takes the
checkpoint's model sizes (`model.*` is overwritten and recorded in the workdir's
config.json). Reused subtrees:
    embed/embeddings                        byte embedding [262, d_model]
    trainable_position_encoding/pos_embs    input positions [T, d_model]
    perceiver_encoder/...                   latents, cross- and self-attention
    basic_decoder/cross_attention/...       the decoder's cross-attention (queries are
                                            d_model wide in both models)
New (initialised fresh): basic_decoder/~/trainable_position_encoding (the task queries,
[num_tasks, d_model]) and the `<task>_head` layers. Dropped: the MLM's 2048 output
queries and embedding_decoder/bias.

Training reports `loss` (and `accuracy` when every task is a classification); the official
per-task metrics and the GLUE average come from

    perceiver-agents predict glue --workdir DIR        # writes DIR/glue_results.{json,md}

    perceiver-agents train glue --workdir runs/cola --config.data.tasks=cola \\
        --config.model.init_checkpoint=runs/mlm
    perceiver-agents train glue --workdir runs/glue_mt --config.data.tasks=all \\
        --config.model.init_checkpoint=language_perceiver_io_bytes.pickle
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from perceiver_agents import blocks
from perceiver_agents import zoo
from perceiver_agents.data import sampling
from perceiver_agents.data import text as text_data
from perceiver_agents.data import tfds_util
from perceiver_agents.learner.config import default_config
from perceiver_agents.tasks import glue_metrics
from perceiver_agents.tasks import mlm
from perceiver_agents.tasks.base import CommandArgs, Task

TOKENIZER = text_data.TOKENIZER


class GlueTask(NamedTuple):
  """A GLUE task's TFDS features and outputs (num_outputs 1: a regression score)."""
  fields: tuple
  num_outputs: int
  eval_split: str


GLUE_TASKS = {
    'cola': GlueTask(('sentence',), 2, 'validation'),
    'sst2': GlueTask(('sentence',), 2, 'validation'),
    'mrpc': GlueTask(('sentence1', 'sentence2'), 2, 'validation'),
    'qqp': GlueTask(('question1', 'question2'), 2, 'validation'),
    'stsb': GlueTask(('sentence1', 'sentence2'), 1, 'validation'),
    'mnli': GlueTask(('premise', 'hypothesis'), 3, 'validation_matched'),
    'qnli': GlueTask(('question', 'sentence'), 2, 'validation'),
    'rte': GlueTask(('sentence1', 'sentence2'), 2, 'validation'),
    'wnli': GlueTask(('sentence1', 'sentence2'), 2, 'validation'),
}
ALL_TASKS = ('cola', 'sst2', 'mrpc', 'qqp', 'stsb', 'mnli', 'qnli', 'rte')  # the paper's 8
RESULTS_FILE = 'glue_results'
# MLM parameter subtrees copied into the classifier (see the module docstring).
REUSED_PREFIXES = ('embed', 'trainable_position_encoding', 'perceiver_encoder/',
                   'basic_decoder/cross_attention/')


# The small variant (--config.preset=local, tasks/base.py): trains end to end in under a
# minute on 2 CPU cores.
PRESETS = {'local': (
    'model.max_seq_len=32', 'model.d_model=16', 'model.num_latents=4',
    'model.num_latent_channels=16', 'model.num_self_attends=1', 'model.qk_channels=8',
    'model.num_self_attend_heads=2', 'model.num_cross_attend_heads=2',
    'data.max_train_examples=256', 'data.max_eval_examples=128', 'train.batch_size=8',
    'eval.batch_size=8', 'train.steps=50',
    'train.log_every=10', 'eval.every=0', 'checkpoint.every=0')}


def get_config() -> ml_collections.ConfigDict:
  config = mlm.get_config()  # The same model section, so MLM sizes carry over.
  config.train.steps = 2000
  config.train.batch_size = 32
  config.eval.every = 500
  config.eval.batch_size = 32
  config.checkpoint.every = 500
  config.optimizer.learning_rate = 1e-4
  config.optimizer.warmup_steps = 100
  config.model.init_checkpoint = ''       # MLM workdir or DeepMind language checkpoint file.
  config.model.max_seq_len = 256

  data = ml_collections.ConfigDict()
  data.tasks = 'cola'               # A task, a comma-separated list, or 'all' (the 8).
  data.max_train_examples = 0       # Per task; 0 = the whole train split.
  data.max_eval_examples = 0        # Per task; 0 = the whole validation split.
  data.data_dir = ''                # Where TFDS glue/* is prepared ('' = TFDS default).
  config.data = data
  return config


def parse_tasks(spec: str) -> tuple:
  """'cola' / 'cola,rte' / 'all' -> task names in order; unknown names raise."""
  names = ALL_TASKS if spec.strip() == 'all' else tuple(
      n.strip().lower() for n in spec.split(',') if n.strip())
  if not names:
    raise ValueError(f'data.tasks: no task in {spec!r}; use e.g. cola, mrpc,rte or all.')
  for name in names:
    if name not in GLUE_TASKS:
      close = difflib.get_close_matches(name, list(GLUE_TASKS), n=2)
      hint = f' Did you mean {" or ".join(close)}?' if close else ''
      raise ValueError(f'data.tasks: unknown GLUE task {name!r}; known: '
                       f'{sorted(GLUE_TASKS)} or all.{hint}')
  if len(set(names)) != len(names):
    raise ValueError(f'data.tasks: a task is listed twice in {spec!r}.')
  return tuple(names)


# -------------------------------------------------------------------------------------
# Data
# -------------------------------------------------------------------------------------


def encode_example(segments, window: int) -> np.ndarray:
  """[CLS] s1 [SEP] (s2 [SEP]) ids int32 [<= window], truncating the longer segment."""
  segments = [text_data.encode(s) for s in segments]
  budget = window - 1 - len(segments)
  if budget < 0:
    raise ValueError(f'model.max_seq_len={window} leaves no room for the special ids.')
  lengths = [len(s) for s in segments]
  while sum(lengths) > budget:
    longest = int(np.argmax(lengths))
    lengths[longest] -= min(lengths[longest], sum(lengths) - budget)
  parts = [np.array([TOKENIZER.cls_token], np.int32)]
  for segment, length in zip(segments, lengths):
    parts += [segment[:length], np.array([TOKENIZER.sep_token], np.int32)]
  return np.concatenate(parts)


def load_examples(task: str, split: str, *, max_examples: int = 0,
                  data_dir: str = '') -> dict:
  """TFDS `glue/<task>` split as {'text': [N] tuples of bytes, 'label': float32 [N]},
  prepared in `data_dir` ('' = TFDS's default)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  spec = GLUE_TASKS[task]
  if max_examples:
    split = f'{split}[:{max_examples}]'
  texts, labels = [], []
  dataset = tfds_util.load(f'glue/{task}', split=split, data_dir=data_dir,
                           flag='data.data_dir', shuffle_files=False)
  for example in tfds.as_numpy(dataset):
    texts.append(tuple(bytes(example[f]) for f in spec.fields))
    labels.append(example['label'])
  if not texts:
    raise ValueError(f'glue/{task} split {split!r} holds no examples.')
  labels = np.asarray(labels, np.float32)
  if spec.num_outputs > 1 and (labels < 0).any():
    raise ValueError(f'glue/{task} split {split!r} has no labels (GLUE test labels are '
                     'hidden); evaluate on the validation split.')
  return {'text': texts, 'label': labels}


def make_batch(examples: dict, indices, task_id: int, window: int) -> dict:
  ids, mask = TOKENIZER.pad_batch(
      [encode_example(examples['text'][i], window) for i in indices], window)
  return {'inputs': ids, 'input_mask': mask,
          'task_id': np.full([len(indices)], task_id, np.int32),
          'label': examples['label'][np.asarray(indices, np.int64)]}


def concat_batches(batches: list) -> dict:
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


# -------------------------------------------------------------------------------------
# Model
# -------------------------------------------------------------------------------------


def make_model(model_config: ml_collections.ConfigDict,
               task_names: tuple) -> hk.TransformedWithState:
  """The multi-query classifier: batch {inputs, input_mask [B, T]} -> {task: [B, C_t]}
  (C_t classes, or 1 for a regression score)."""
  kwargs = mlm.model_kwargs(model_config)
  window, d_model = kwargs['max_seq_len'], kwargs['d_model']
  encoder_kwargs, lm_decoder = kwargs['encoder'], kwargs['decoder']

  def forward(batch, is_training: bool = False):
    inputs, input_mask = batch['inputs'], batch['input_mask']  # [B, T]
    if inputs.ndim != 2 or inputs.shape[1] != window:
      raise ValueError(f'inputs: expected [B, {window}], got {inputs.shape}.')
    embed = hk.Embed(vocab_size=zoo.BYTES_VOCAB_SIZE, embed_dim=d_model)  # 'embed'
    x = embed(inputs)  # [B, T, d_model]
    x = x + blocks.TrainablePositionEncoding(index_dim=window, num_channels=d_model)(
        inputs.shape[0])
    decoder = blocks.BasicDecoder(
        output_num_channels=d_model, position_encoding_type='trainable',
        output_index_dims=len(task_names), qk_channels=lm_decoder['qk_channels'],
        v_channels=lm_decoder['v_channels'], num_heads=lm_decoder['num_heads'],
        final_project=False, use_query_residual=False,
        trainable_position_encoding_kwargs=dict(num_channels=d_model, init_scale=0.02))
    model = blocks.Perceiver(encoder=blocks.PerceiverEncoder(**encoder_kwargs),
                             decoder=decoder)
    queries = model(x, is_training=is_training, input_mask=input_mask)  # [B, tasks, E]
    return {name: hk.Linear(GLUE_TASKS[name].num_outputs, name=f'{name}_head')(
        queries[:, i]) for i, name in enumerate(task_names)}

  return hk.transform_with_state(forward)


def is_reused(module_path: str) -> bool:
  return any(module_path == p or (p.endswith('/') and module_path.startswith(p))
             for p in REUSED_PREFIXES)


def merge_pretrained(params: dict, pretrained: dict) -> tuple[dict, list]:
  """`params` with every REUSED_PREFIXES module taken from the MLM `pretrained` tree.

  Returns (params, the 'module/name' paths copied). Raises ValueError naming the path
  if a reused parameter is missing from the checkpoint or has another shape.
  """
  merged, copied = {}, []
  for module, leaves in params.items():
    merged[module] = dict(leaves)
    if not is_reused(module):
      continue
    for name, value in leaves.items():
      source = pretrained.get(module, {}).get(name)
      if source is None:
        raise ValueError(f'model.init_checkpoint: the checkpoint has no {module}/{name}; is it '
                         'a language MLM checkpoint?')
      if tuple(source.shape) != tuple(value.shape):
        raise ValueError(f'model.init_checkpoint: {module}/{name} is {tuple(source.shape)} in '
                         f'the checkpoint, the classifier needs {tuple(value.shape)}.')
      merged[module][name] = jnp.asarray(source, value.dtype)
      copied.append(f'{module}/{name}')
  return merged, copied


def with_pretrained(model: hk.TransformedWithState,
                    pretrained: dict) -> hk.TransformedWithState:
  """`model` whose init copies the reused MLM parameters (merge_pretrained)."""
  def init(rng, batch, is_training=True):
    params, state = model.init(rng, batch, is_training=is_training)
    return merge_pretrained(params, pretrained)[0], state
  return hk.TransformedWithState(init, model.apply)


def make_loss(task_names: tuple):
  """Per-example loss [B]: cross-entropy (classification) or squared error (STS-B) of the
  head of each example's own task."""
  def loss(outputs, batch):
    total = jnp.zeros(batch['task_id'].shape, jnp.float32)
    for i, name in enumerate(task_names):
      out = outputs[name].astype(jnp.float32)  # [B, C]
      if GLUE_TASKS[name].num_outputs == 1:
        example_loss = jnp.square(out[:, 0] - batch['label'].astype(jnp.float32))
      else:
        labels = jnp.clip(batch['label'].astype(jnp.int32), 0, out.shape[-1] - 1)
        example_loss = optax.softmax_cross_entropy_with_integer_labels(out, labels)
      total = jnp.where(batch['task_id'] == i, example_loss, total)
    return total
  return loss


def make_metrics(task_names: tuple):
  """accuracy [B] when all tasks are classifications (the official metrics need whole
  eval sets: see `predict`)."""
  if any(GLUE_TASKS[n].num_outputs == 1 for n in task_names):
    return lambda outputs, batch: {}

  def metrics(outputs, batch):
    correct = jnp.zeros(batch['task_id'].shape, jnp.float32)
    for i, name in enumerate(task_names):
      hit = jnp.argmax(outputs[name], -1) == batch['label'].astype(jnp.int32)
      correct = jnp.where(batch['task_id'] == i, hit.astype(jnp.float32), correct)
    return {'accuracy': correct}
  return metrics


def resolve_model_config(config: ml_collections.ConfigDict) -> Any:
  """Loads `model.init_checkpoint` (if set): returns its params and overwrites config.model's
  sizes with the checkpoint's, so that config.json records the model actually built."""
  if not config.model.init_checkpoint:
    return None
  params, mlm_config, description = mlm.load_mlm_params(config.model.init_checkpoint)
  for key, value in mlm_config.model.items():
    config.model[key] = value
  print(f'glue: initialising from {description}; reusing {", ".join(REUSED_PREFIXES)}.',
        file=sys.stderr)
  return params


def build(config: ml_collections.ConfigDict) -> Task:
  task_names = parse_tasks(config.data.tasks)
  d = config.data
  train_sets = [load_examples(n, 'train', max_examples=d.max_train_examples,
                              data_dir=d.data_dir) for n in task_names]
  eval_sets = [load_examples(n, GLUE_TASKS[n].eval_split,
                             max_examples=d.max_eval_examples, data_dir=d.data_dir)
               for n in task_names]
  pretrained = resolve_model_config(config)
  window = mlm.window_length(config.model)
  batch_size = config.train.batch_size

  def train_batch(step: int) -> dict:
    if len(task_names) == 1:
      idx = sampling.batch_indices(seed=config.seed, step=step, batch_size=batch_size,
                                   num_examples=len(train_sets[0]['label']))
      return make_batch(train_sets[0], idx, 0, window)
    rng = sampling.step_rng(config.seed, step)
    task_ids = np.sort(rng.integers(len(task_names), size=batch_size))  # uniform mixing
    parts = []
    for t in np.unique(task_ids):
      n = int(np.sum(task_ids == t))
      parts.append(make_batch(train_sets[t], rng.integers(len(train_sets[t]['label']),
                                                          size=n), int(t), window))
    return concat_batches(parts)

  def eval_batches(size: int):
    for t, examples in enumerate(eval_sets):
      for start in range(0, len(examples['label']), size):
        idx = np.arange(start, min(start + size, len(examples['label'])))
        yield make_batch(examples, idx, t, window)

  model = make_model(config.model, task_names)
  if pretrained is not None:
    model = with_pretrained(model, pretrained)
  return Task(model=model, loss=make_loss(task_names), metrics=make_metrics(task_names),
              train_batch=train_batch, eval_batches=eval_batches)


# -------------------------------------------------------------------------------------
# Official metrics: `perceiver-agents predict glue --workdir DIR`
# -------------------------------------------------------------------------------------


def predictions_of(outputs: np.ndarray, task: str) -> np.ndarray:
  """Head outputs [N, C] -> class ids int [N], or scores float [N] for STS-B."""
  if GLUE_TASKS[task].num_outputs == 1:
    return outputs[:, 0]
  return np.argmax(outputs, -1)


def evaluate_workdir(workdir: str, *, max_examples: int = 0,
                     batch_size: int = 32) -> dict:
  """{task: task_scores} of the latest checkpoint of a `train glue` workdir on each task's
  validation split."""
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(config_path):
    raise ValueError(f'--workdir: {workdir} has no config.json; is it a workdir of '
                     '`perceiver-agents train glue`?')
  mlm.task_config_of_run(workdir, 'glue')  # Checks that the run is a GLUE run.
  with open(config_path) as f:
    recorded = json.load(f)
  model_config = ml_collections.ConfigDict(recorded['model'])
  task_names = parse_tasks(recorded['data']['tasks'])
  params, step = mlm.restore_params(os.path.join(workdir, 'checkpoints'))
  window = mlm.window_length(model_config)
  model = make_model(model_config, task_names)
  apply = jax.jit(lambda p, b: model.apply(p, {}, None, b, is_training=False)[0])
  limit = max_examples or recorded['data'].get('max_eval_examples', 0)
  results = {}
  for t, name in enumerate(task_names):
    examples = load_examples(name, GLUE_TASKS[name].eval_split, max_examples=limit,
                             data_dir=recorded['data'].get('data_dir', ''))
    n = len(examples['label'])
    predictions = []
    for start in range(0, n, batch_size):
      idx = np.arange(start, min(start + batch_size, n))
      batch = make_batch(examples, np.pad(idx, (0, batch_size - len(idx)), mode='edge'),
                         t, window)
      predictions.append(predictions_of(np.asarray(apply(params, batch)[name]),
                                        name)[:len(idx)])
    results[name] = glue_metrics.task_scores(name, np.concatenate(predictions),
                                             examples['label'])
    results[name]['num_examples'] = n
  return {'step': step, 'results': results}


def predict(command: CommandArgs) -> int:
  """`perceiver-agents predict glue --checkpoint DIR`: the per-task metric table
  (`--workdir DIR` is the same)."""
  parser = argparse.ArgumentParser(
      prog='perceiver-agents predict glue',
      description='Score a `train glue` workdir on the GLUE validation splits; writes '
                  f'{RESULTS_FILE}.json and {RESULTS_FILE}.md into the workdir.')
  parser.add_argument('--max-examples', type=int, default=0,
                      help='per task (0: as the run evaluated, else the whole split)')
  parsed = parser.parse_args(command.args)
  workdir = command.require_checkpoint('a workdir of `train glue`')
  command.refuse_overrides('predict glue scores the run as it was trained')
  evaluation = evaluate_workdir(workdir, max_examples=parsed.max_examples)
  table = glue_metrics.results_table(evaluation['results'])
  scores = [s['score'] for s in evaluation['results'].values()]
  evaluation['glue_average'] = float(np.mean(scores))
  with open(os.path.join(workdir, RESULTS_FILE + '.json'), 'w') as f:
    json.dump(evaluation, f, indent=2)
  with open(os.path.join(workdir, RESULTS_FILE + '.md'), 'w') as f:
    f.write(f'GLUE validation, checkpoint step {evaluation["step"]}\n\n{table}\n')
  print(table)
  return 0
