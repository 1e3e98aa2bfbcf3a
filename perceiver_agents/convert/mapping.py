"""Haiku parameter paths of the zoo's models <-> transformers' state-dict keys.

Every Haiku leaf (module path, name) of the six model classes has one transformers key
and a layout change (`Rule.kind`):

  linear  hk.Linear w [in, out]            <-> nn.Linear weight [out, in] (transpose)
  conv    hk.Conv2D w [kh, kw, in, out]    <-> nn.Conv2d weight [out, in, kh, kw]
  vector  hk.BatchNorm scale/offset/averages [1, 1, 1, C] <-> [C]
  copy    the same array (LayerNorm scale/offset, position tables, embeddings)
  counter hk.BatchNorm's EMA step counters (int32 scalars) <-> num_batches_tracked
  hidden  the EMA's un-debiased accumulator, which transformers does not keep: derived
          from the average and the counter (hidden = average * (1 - decay**counter))

  to_haiku(state_dict, expected, name=...)  -> (params, state), all keys accounted for
  to_state_dict(params, state, name=...)    -> {key: array}
"""

import re
from typing import Any, Mapping, NamedTuple, Optional

import numpy as np

# Conv2DDownsample's BatchNorm decay (encoders/image.py), for the derived `hidden`.
BATCHNORM_DECAY = 0.9


class Rule(NamedTuple):
  key: str
  kind: str  # linear | conv | vector | copy | counter | hidden


_LEAF = {'w': 'weight', 'b': 'bias', 'scale': 'weight', 'offset': 'bias'}
_ATTENTION_PARTS = {
    'attention/linear': 'attention.self.query',
    'attention/linear_1': 'attention.self.key',
    'attention/linear_2': 'attention.self.value',
    'attention/linear_3': 'attention.output.dense',
    'mlp/linear': 'mlp.dense1',
    'mlp/linear_1': 'mlp.dense2',
}
_CROSS_NORMS = {'layer_norm': 'attention.self.layernorm1',
                'layer_norm_1': 'attention.self.layernorm2',
                'layer_norm_2': 'layernorm'}
_SELF_NORMS = {'layer_norm': 'attention.self.layernorm1', 'layer_norm_1': 'layernorm'}

# Attention blocks: Haiku module prefix (regex) -> (transformers prefix, is cross).
_BLOCKS = (
    (r'(?:perceiver_encoder|encoder)/~/cross_attention', 'perceiver.encoder.cross_attention',
     True),
    (r'(?:perceiver_encoder|encoder)/~/self_attention(?:_(\d+))?',
     'perceiver.encoder.self_attends.{0}', False),
    (r'basic_decoder/cross_attention', 'perceiver.decoder.decoding_cross_attention', True),
    (r'(?:classification|flow|multimodal)_decoder/~/basic_decoder/cross_attention',
     'perceiver.decoder.decoder.decoding_cross_attention', True),
)

_PRE = 'perceiver.input_preprocessor'
_BN = 'image_preprocessor/~/conv2_d_downsample/~/batchnorm'
# Other modules: Haiku module (regex) -> (transformers prefix, kind of its w / tables).
_MODULES = (
    (r'embed', f'{_PRE}.embeddings', 'copy'),
    (r'trainable_position_encoding', f'{_PRE}.position_embeddings', 'copy'),
    (r'(?:perceiver_encoder|encoder)/~/trainable_position_encoding',
     'perceiver.embeddings.latents', 'copy'),
    (r'basic_decoder/~/trainable_position_encoding',
     'perceiver.decoder.output_position_encodings.position_embeddings', 'copy'),
    (r'classification_decoder/~/basic_decoder/~/trainable_position_encoding',
     'perceiver.decoder.decoder.output_position_encodings.position_embeddings', 'copy'),
    (r'(?:classification|flow|multimodal)_decoder/~/basic_decoder/output',
     'perceiver.decoder.decoder.final_layer', 'linear'),
    (r'embedding_decoder', 'embedding_decoder', 'copy'),
    (r'image_preprocessor/~/conv2_d', f'{_PRE}.convnet_1x1', 'conv'),
    (r'image_preprocessor/~_build_network_inputs/trainable_position_encoding',
     f'{_PRE}.position_embeddings.position_embeddings', 'copy'),
    (r'image_preprocessor/~_build_network_inputs/position_encoding_projector/linear',
     f'{_PRE}.positions_projection', 'linear'),
    (r'image_preprocessor/~/conv2_d_downsample/~/conv', f'{_PRE}.convnet.conv', 'conv'),
    (_BN, f'{_PRE}.convnet.batchnorm', 'vector'),
    (r'image_preprocessor/patches_linear', f'{_PRE}.conv_after_patches', 'linear'),
    (r'multimodal_preprocessor/(\w+)_padding', f'{_PRE}.padding.{{0}}', 'copy'),
    (r'multimodal_preprocessor/(\w+)_mask_token', f'{_PRE}.mask.{{0}}', 'copy'),
    (r'multimodal_decoder/~decoder_query/(\w+)_padding', 'perceiver.decoder.padding.{0}',
     'copy'),
    (r'audio_postprocessor/linear',
     'perceiver.output_postprocessor.modalities.audio.classifier', 'linear'),
    (r'projection_postprocessor/linear',
     'perceiver.output_postprocessor.modalities.image.classifier', 'linear'),
    (r'classification_postprocessor/linear',
     'perceiver.output_postprocessor.modalities.label.classifier', 'linear'),
)
# Whole-key names for leaves whose transformers name is not prefix + weight/bias.
_WHOLE = {
    f'{_PRE}.embeddings/embeddings': f'{_PRE}.embeddings.weight',
    f'{_PRE}.position_embeddings/pos_embs': f'{_PRE}.position_embeddings.weight',
}


def rule(module: str, name: str, *, model: str) -> Optional[Rule]:
  """The transformers key of the Haiku leaf `module`/`name` of zoo model `model`."""
  for pattern, prefix, cross in _BLOCKS:
    m = re.fullmatch(pattern + r'/(.+)', module)
    if m:
      hf = prefix.format(m.group(1) or '0') if m.groups()[:-1] else prefix
      part = m.groups()[-1]
      norms = _CROSS_NORMS if cross else _SELF_NORMS
      if part in _ATTENTION_PARTS and name in ('w', 'b'):
        return Rule(f'{hf}.{_ATTENTION_PARTS[part]}.{_LEAF[name]}',
                    'linear' if name == 'w' else 'copy')
      if part in norms and name in ('scale', 'offset'):
        return Rule(f'{hf}.{norms[part]}.{_LEAF[name]}', 'copy')
      return None
  ema = re.fullmatch(re.escape(_BN) + r'/~/(mean|var)_ema', module)
  if ema:
    kind = {'average': 'vector', 'counter': 'counter', 'hidden': 'hidden'}.get(name)
    if kind is None:
      return None
    key = (f'{_PRE}.convnet.batchnorm.num_batches_tracked' if kind == 'counter'
           else f'{_PRE}.convnet.batchnorm.running_{ema.group(1)}')
    return Rule(key, kind)
  for pattern, prefix, kind in _MODULES:
    m = re.fullmatch(pattern, module)
    if not m:
      continue
    hf = prefix.format(*m.groups())
    if model == 'video_autoencoder' and module.startswith('classification_decoder/'):
      hf = ('perceiver.decoder.modalities.label.decoder.output_position_encodings.'
            'position_embeddings')
    if name == 'pos_embs':
      return Rule(_WHOLE.get(f'{hf}/{name}', hf), 'copy')
    if name == 'embeddings':
      return Rule(_WHOLE[f'{hf}/{name}'], 'copy')
    if name == 'bias' and module == 'embedding_decoder':
      return Rule(f'{hf}.bias', 'copy')
    if name == 'w':
      return Rule(f'{hf}.weight', kind)
    if name == 'b':
      return Rule(f'{hf}.bias', 'copy')
    if name in ('scale', 'offset') and kind == 'vector':
      return Rule(f'{hf}.{_LEAF[name]}', 'vector')
    return None
  return None


def to_hf(array: np.ndarray, kind: str) -> np.ndarray:
  """A Haiku leaf in transformers' layout."""
  if kind == 'linear':
    return np.ascontiguousarray(array.T)
  if kind == 'conv':
    return np.ascontiguousarray(np.transpose(array, (3, 2, 0, 1)))
  if kind == 'vector':
    return np.ascontiguousarray(array.reshape(-1))
  if kind == 'counter':
    return np.asarray(array, np.int64)
  return np.array(array, order='C')


def from_hf(array: np.ndarray, kind: str, shape: tuple, dtype: Any) -> np.ndarray:
  """A transformers tensor in the Haiku leaf's layout (shape and dtype)."""
  if kind == 'linear' and array.ndim == 2:
    array = array.T
  elif kind == 'conv' and array.ndim == 4:
    array = np.transpose(array, (2, 3, 1, 0))
  elif kind == 'vector':
    array = array.reshape(shape) if array.size == int(np.prod(shape)) else array
  elif kind == 'counter':
    if array.size == 1 and not 0 <= int(array.reshape(())) < 2 ** 31:
      raise ValueError(f'num_batches_tracked={int(array)} does not fit an int32 counter.')
  return np.array(array, dtype=dtype, order='C')  # (ascontiguousarray makes 0-d 1-d)


def to_haiku(state_dict: Mapping[str, np.ndarray], expected: Mapping[str, Any], *,
             model: str, where: str) -> tuple[dict, dict]:
  """(params, state) for the Haiku trees `expected` = {'params': P, 'state': S} of
  jax.ShapeDtypeStructs, from transformers' `state_dict`.

  Raises one ValueError listing every missing, unexpected and misshapen tensor.
  """
  trees: dict = {'params': {}, 'state': {}}
  used, missing, wrong, unmapped = set(), [], [], []
  for section in ('params', 'state'):
    for module, leaves in expected[section].items():
      for name, spec in leaves.items():
        r = rule(module, name, model=model)
        if r is None:
          unmapped.append(f'{module}/{name}')
          continue
        if r.kind == 'hidden':
          continue  # derived below, once its average and counter are in
        if r.key not in state_dict:
          missing.append(r.key)
          continue
        used.add(r.key)
        try:
          value = from_hf(np.asarray(state_dict[r.key]), r.kind, spec.shape, spec.dtype)
        except ValueError as e:
          wrong.append(f'{r.key}: {e}')
          continue
        if value.shape != tuple(spec.shape):
          wrong.append(f'{r.key}: {tuple(np.shape(state_dict[r.key]))} does not give '
                       f'{module}/{name} {tuple(spec.shape)}')
          continue
        trees[section].setdefault(module, {})[name] = value
  unexpected = sorted(set(state_dict) - used - set(missing))
  if unmapped:  # a zoo module without a transformers counterpart: a bug here
    raise ValueError(f'{where}: no transformers name for {unmapped[:10]}.')
  if missing or unexpected or wrong:
    parts = []
    for label, items in (('missing', sorted(set(missing))), ('unexpected', unexpected),
                         ('wrong shape', wrong)):
      if items:
        shown = ', '.join(items[:20]) + (f', ... ({len(items)} in all)'
                                         if len(items) > 20 else '')
        parts.append(f'{label}: {shown}')
    raise ValueError(f'{where}: the weights do not fit the configured {model} model; '
                     + '; '.join(parts))
  for module, leaves in expected['state'].items():
    for name, spec in leaves.items():
      if rule(module, name, model=model).kind == 'hidden':
        tree = trees['state'][module]
        counter = int(tree['counter'])
        debias = np.float32(1.0) - np.float32(BATCHNORM_DECAY) ** np.float32(counter)
        tree[name] = (tree['average'] * debias).astype(spec.dtype)
  return trees['params'], trees['state']


def to_state_dict(params: Mapping[str, Mapping[str, Any]],
                  state: Mapping[str, Mapping[str, Any]], *, model: str
                  ) -> dict[str, np.ndarray]:
  """transformers' state dict of the zoo model `model`'s (params, state)."""
  out: dict[str, np.ndarray] = {}
  unmapped = []
  for tree in (params, state or {}):
    for module, leaves in tree.items():
      for name, value in leaves.items():
        r = rule(module, name, model=model)
        if r is None:
          unmapped.append(f'{module}/{name}')
        elif r.kind != 'hidden':
          array = to_hf(np.asarray(value), r.kind)
          if r.key in out and not np.array_equal(out[r.key], array):
            raise ValueError(f'{module}/{name}: differs from the other leaf stored as '
                             f'{r.key} (the two BatchNorm counters must agree).')
          out[r.key] = array
  if unmapped:
    raise ValueError(f'model {model}: these parameters have no transformers '
                     f'counterpart: {sorted(unmapped)[:20]}.')
  return out
