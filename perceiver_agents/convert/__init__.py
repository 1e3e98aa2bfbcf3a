"""Hugging Face transformers' Perceiver checkpoints in and out of the zoo's models.

    c = from_transformers('./language-perceiver')     # config.json + weights
    logits = c.model.apply(c.params, None, ids, mask)  # as zoo.build(c.name) would
    to_transformers(c.name, c.params, c.state, './out', kwargs=c.kwargs)
    # -> ./out/config.json + model.safetensors for transformers' from_pretrained

The six classes: PerceiverForMaskedLM, PerceiverForImageClassificationLearned |
Fourier | ConvProcessing, PerceiverForOpticalFlow, PerceiverForMultimodalAutoencoding.
Weights are read without running code: model.safetensors through safetensors' numpy
API, pytorch_model.bin through a restricted unpickler (convert.safe_torch). Where
transformers computes something other than DeepMind's model, `c.model` computes what
transformers does (convert.hf_config: the decoder's query residual, the conv
preprocessor's padding, exact GELU); inputs stay this library's: channels-last images,
raw frame pairs for flow (transformers takes their 3x3 patches, [B, 2, 27, H, W]), and
flow in pixels (transformers' PerceiverForOpticalFlow returns flow / 20).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Union

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_agents import zoo
from perceiver_agents.convert import compat
from perceiver_agents.convert import hf_config
from perceiver_agents.convert import mapping
from perceiver_agents.convert.safe_torch import load_pytorch_bin

__all__ = ['Converted', 'from_transformers', 'to_transformers', 'read_state_dict',
           'is_transformers_dir', 'load_pytorch_bin']

CONFIG_FILE = 'config.json'
SAFETENSORS_FILE = 'model.safetensors'
PYTORCH_FILE = 'pytorch_model.bin'


class Converted(NamedTuple):
  """A transformers checkpoint as a zoo model.

  name: the zoo's name (a zoo.PUBLISHED key); kwargs: its builder's kwargs for the
  checkpoint's sizes; model: the builder's transform (exact-GELU MLPs where the config
  says hidden_act='gelu'); params, state: Haiku trees of numpy arrays (state {} where
  there is none); config: the config.json read.
  """
  name: str
  kwargs: dict
  model: Union[hk.Transformed, hk.TransformedWithState]
  params: dict
  state: dict
  config: dict


def is_transformers_dir(path: str) -> bool:
  """A folder holding config.json and model.safetensors or pytorch_model.bin."""
  return (os.path.isfile(os.path.join(path, CONFIG_FILE)) and any(
      os.path.isfile(os.path.join(path, f)) for f in (SAFETENSORS_FILE, PYTORCH_FILE)))


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """{key: array} of a weights file (.safetensors or a torch .bin), no code run."""
  if path.endswith('.safetensors'):
    from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    try:
      return dict(load_file(path))
    except TypeError as e:
      if 'bfloat16' not in str(e):
        raise ValueError(f'{path}: not a readable safetensors file: {e}') from None
      return _read_bfloat16_safetensors(path)
    except (SafetensorError, OSError, ValueError) as e:
      raise ValueError(f'{path}: not a readable safetensors file (truncated or '
                       f'corrupt?): {e}') from None
  return load_pytorch_bin(path)


def _read_bfloat16_safetensors(path: str) -> dict[str, np.ndarray]:
  """A safetensors file holding bfloat16 tensors, which numpy's API cannot type.

  The format: an 8-byte little-endian header length, a JSON header {name: {dtype,
  shape, data_offsets}}, then the raw little-endian data.
  """
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  dtypes = {'BF16': ml_dtypes.bfloat16, 'F16': np.float16, 'F32': np.float32,
            'F64': np.float64, 'I64': np.int64, 'I32': np.int32, 'I16': np.int16,
            'I8': np.int8, 'U8': np.uint8, 'BOOL': np.bool_}
  with open(path, 'rb') as f:
    data = f.read()
  try:
    size = int.from_bytes(data[:8], 'little')
    header = json.loads(data[8:8 + size])
    header.pop('__metadata__', None)
    out = {}
    for key, entry in header.items():
      start, end = entry['data_offsets']
      raw = data[8 + size + start:8 + size + end]
      array = np.frombuffer(raw, np.dtype(dtypes[entry['dtype']]).newbyteorder('<'))
      out[key] = array.reshape(entry['shape']).copy()
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{path}: not a readable safetensors file (truncated or '
                     f'corrupt?): {type(e).__name__}: {e}') from None
  return out


def _weights_file(directory: str) -> str:
  for name in (SAFETENSORS_FILE, PYTORCH_FILE):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  found = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
  raise ValueError(f'{directory}: no {SAFETENSORS_FILE} or {PYTORCH_FILE} (found '
                   f'{found[:10]}); sharded checkpoints are not supported.')


def build(name: str, kwargs: Mapping[str, Any], *, exact_gelu: bool = False):
  """The zoo builder's transform for `name` with `kwargs` (exact-GELU MLPs if asked)."""
  model = getattr(zoo, zoo.PUBLISHED[name][0])(**kwargs)
  return compat.with_exact_gelu(model) if exact_gelu else model


def sample_inputs(name: str, kwargs: Mapping[str, Any], *,
                  image_size: Optional[int] = None) -> tuple:
  """Zero inputs of the shapes `name`'s function takes (batch 1), for shape tracing."""
  if name == 'language_perceiver':
    length = kwargs['max_seq_len']
    return (jnp.zeros((1, length), jnp.int32), jnp.ones((1, length), bool))
  if name.startswith('imagenet_'):
    side = image_size or 224
    return (jnp.zeros((1, side, side, 3), jnp.float32),)
  if name == 'optical_flow':
    return (jnp.zeros((1, 2, *kwargs['train_size'], 3), jnp.float32),)
  frames, side = kwargs['num_frames'], kwargs['image_size']
  audio = frames * kwargs['audio_samples_per_frame']
  return (jnp.zeros((1, frames, side, side, 3), jnp.float32),
          jnp.zeros((1, audio, 1), jnp.float32),
          {'image': jnp.arange(1), 'audio': jnp.arange(1)})


def expected_trees(model, inputs: Sequence[Any]) -> dict:
  """{'params': ..., 'state': ...} of jax.ShapeDtypeStruct that `model` creates."""
  # is_training: BatchNorm creates its statistics there (its eval mode only reads them).
  out = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs,
                                          is_training=True))
  if isinstance(out, tuple):
    params, state = out
  else:
    params, state = out, {}
  return {'params': params, 'state': state}


def from_transformers(path: str) -> Converted:
  """Reads a saved transformers Perceiver (folder with config.json + weights).

  Raises:
    ValueError: the config names another model or options the zoo cannot build; the
      weights miss, add or misshape tensors (all listed in one message); or a weights
      file is corrupt, truncated or (pickle) refers to anything but tensors.
  """
  config_path = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise ValueError(f'{path}: no {CONFIG_FILE}; expected a folder written by '
                     "transformers' save_pretrained.")
  with open(config_path) as f:
    try:
      config = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{config_path}: not valid JSON: {e}') from None
  name, kwargs = hf_config.builder_kwargs(config, where=config_path)
  exact = hf_config.gelu_is_exact(config, where=config_path)
  weights = _weights_file(path)
  state_dict = read_state_dict(weights)
  model = build(name, kwargs, exact_gelu=exact)
  side = dict(hf_config.DEFAULTS, **config)['image_size']
  expected = expected_trees(model, sample_inputs(name, kwargs, image_size=side))
  params, state = mapping.to_haiku(state_dict, expected, model=name, where=weights)
  return Converted(name=name, kwargs=kwargs, model=model, params=params, state=state,
                   config=config)


def to_transformers(name_or_kwargs: Union[str, tuple], params: Mapping[str, Any],
                    state: Optional[Mapping[str, Any]], out_dir: str, *,
                    kwargs: Optional[Mapping[str, Any]] = None,
                    hidden_act: Optional[str] = None,
                    base_config: Optional[Mapping[str, Any]] = None,
                    dtype: Optional[str] = None) -> str:
  """Writes `out_dir`/config.json + model.safetensors for transformers' from_pretrained.

  name_or_kwargs: a zoo name (its published kwargs, or `kwargs`) or a
    (name, kwargs) pair such as zoo.PUBLISHED's values' counterpart (name first).
  params, state: the model's Haiku trees (numpy or JAX arrays; state None or {} for
    models without).
  hidden_act: the GELU (default: base_config's, else 'gelu_new', the published
    models' tanh approximation).
  base_config: a config.json to keep the size-independent keys of (id2label, ...).
  dtype: 'float32' or 'float16' for the floating tensors (default: base_config's
    dtype, else float32).
  Returns out_dir. Raises ValueError for options transformers cannot express and for
  parameters that do not fit the model.
  """
  if isinstance(name_or_kwargs, str):
    name = name_or_kwargs
    if name not in zoo.PUBLISHED:
      raise ValueError(f'name: {name!r} is not a zoo model; expected one of '
                       f'{sorted(zoo.PUBLISHED)}.')
    kwargs = dict(zoo.PUBLISHED[name][1] if kwargs is None else kwargs)
  else:
    name, kwargs = name_or_kwargs[0], dict(name_or_kwargs[1])
  if not out_dir:
    raise ValueError('out_dir: required (the folder to write).')
  base = dict(base_config or {})
  act = hidden_act or base.get('hidden_act', 'gelu_new')
  image_size = None
  if name == 'imagenet_learned_position_encoding':
    rows = np.shape(params['image_preprocessor/~_build_network_inputs/'
                           'trainable_position_encoding']['pos_embs'])[0]
    image_size = int(round(rows ** 0.5))
    if image_size ** 2 != rows:
      raise ValueError(f'params: the position table has {rows} rows, not a square '
                       "(transformers' learned-position model takes square images).")
  config = hf_config.transformers_config(name, kwargs, image_size=image_size,
                                         hidden_act=act, base=base)
  model = build(name, kwargs)
  expected = expected_trees(model, sample_inputs(name, kwargs, image_size=image_size))
  _check_fits(params, expected['params'], 'params')
  _check_fits(state or {}, expected['state'], 'state')
  tensors = mapping.to_state_dict(params, state or {}, model=name)
  dtype = dtype or base.get('dtype') or base.get('torch_dtype') or 'float32'
  if dtype not in _DTYPES:
    raise ValueError(f'dtype: {dtype!r}; expected one of {sorted(_DTYPES)}.')
  tensors = {k: v.astype(_DTYPES[dtype]) if v.dtype.kind == 'f' else v
             for k, v in tensors.items()}
  config['dtype'] = dtype
  os.makedirs(out_dir, exist_ok=True)
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_file(tensors, os.path.join(out_dir, SAFETENSORS_FILE), metadata={'format': 'pt'})
  with open(os.path.join(out_dir, CONFIG_FILE), 'w') as f:
    json.dump(config, f, indent=2, sort_keys=True)
  return out_dir


_DTYPES = {'float32': np.float32, 'float16': np.float16}


def _check_fits(tree: Mapping[str, Any], expected: Mapping[str, Any], what: str) -> None:
  got = {f'{m}/{n}': tuple(np.shape(v)) for m, leaves in tree.items()
         for n, v in leaves.items()}
  want = {f'{m}/{n}': tuple(v.shape) for m, leaves in expected.items()
          for n, v in leaves.items()}
  if got != want:
    missing = sorted(set(want) - set(got))[:10]
    extra = sorted(set(got) - set(want))[:10]
    shapes = [f'{k}: {got[k]} vs {want[k]}' for k in sorted(set(got) & set(want))
              if got[k] != want[k]][:10]
    raise ValueError(f'{what}: do not fit the model; missing {missing}, unexpected '
                     f'{extra}, shape mismatches {shapes}.')
