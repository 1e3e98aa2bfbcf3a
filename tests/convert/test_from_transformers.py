"""transformers' Perceiver checkpoints -> the zoo's models: outputs, round trip, refusals.

The fixtures (tests/fixtures/transformers/<class>/) were written by
benchmarks/make_transformers_fixtures.py with torch + transformers; these tests need
neither: they compare this library's outputs with the recorded transformers outputs.
"""

import json
import os
import pathlib
import shutil

import chex
import jax
import numpy as np
import pytest

from perceiver_agents import convert
from perceiver_agents.convert import hf_config

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / 'fixtures' / 'transformers'
CLASSES = sorted(hf_config.ARCHITECTURES)
FORMATS = [(cls, fmt) for cls in CLASSES for fmt in ('model.safetensors',
                                                     'pytorch_model.bin')
           if (FIXTURES / cls / fmt).exists()]
RTOL = 1e-4


def _one_format(cls: str, weights: str, tmp_path) -> str:
  """A folder with the class's config.json and only the `weights` file."""
  folder = tmp_path / cls
  folder.mkdir(parents=True)
  shutil.copy(FIXTURES / cls / 'config.json', folder)
  shutil.copy(FIXTURES / cls / weights, folder)
  return str(folder)


def _recorded(cls: str):
  io = np.load(FIXTURES / cls / 'io.npz')
  inputs = {k[len('inputs/'):]: io[k] for k in io.files if k.startswith('inputs/')}
  outputs = {k[len('outputs/'):]: io[k] for k in io.files if k.startswith('outputs/')}
  return inputs, outputs


def run(c: convert.Converted, inputs: dict) -> dict:
  """The converted model's outputs, named like the fixture's (transformers' units)."""
  apply = jax.jit(c.model.apply)
  if c.name == 'language_perceiver':
    return {'logits': apply(c.params, None, inputs['inputs'], inputs['input_mask'])}
  if c.name.startswith('imagenet_'):
    return {'logits': apply(c.params, c.state, None, inputs['images'])[0]}
  if c.name == 'optical_flow':
    # transformers' PerceiverForOpticalFlow returns flow / 20 (the published scale).
    return {'flow': apply(c.params, None, inputs['images']) / 20.0}
  outputs, _ = apply(
      c.params, c.state, None, inputs['images'], inputs['audio'],
      {'image': inputs['subsampling/image'], 'audio': inputs['subsampling/audio']})
  return outputs


def relative_error(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def assert_matches(cls: str, got: dict, want: dict) -> None:
  assert set(got) == set(want)
  for key, value in want.items():
    value, mine = np.asarray(value), np.asarray(got[key])
    if cls == 'PerceiverForMaskedLM':
      # transformers decodes padded positions too; here their queries are masked
      # (zeros), so only the valid positions are compared.
      mask = _recorded(cls)[0]['input_mask']
      value, mine = value[mask], mine[mask]
    assert relative_error(mine, value) <= RTOL, (cls, key, relative_error(mine, value))


@pytest.mark.parametrize('cls', CLASSES)
def test_outputs_equal_transformers(cls, tmp_path):
  """Each weights format converts to the same trees, whose outputs are transformers'."""
  converted = [convert.from_transformers(_one_format(cls, weights, tmp_path / weights))
               for c, weights in FORMATS if c == cls]
  c = converted[0]
  for other in converted[1:]:
    chex.assert_trees_all_equal((other.params, other.state), (c.params, c.state))
  assert c.name == hf_config.ARCHITECTURES[cls]
  inputs, outputs = _recorded(cls)
  assert_matches(cls, run(c, inputs), outputs)
  if c.name == 'imagenet_conv_preprocessing':
    assert c.state  # BatchNorm's statistics
  else:
    assert c.state == {}


def test_every_class_has_a_fixture_and_both_formats_are_covered():
  assert {cls for cls, _ in FORMATS} == set(CLASSES)
  assert {fmt for _, fmt in FORMATS} == {'model.safetensors', 'pytorch_model.bin'}


@pytest.mark.parametrize('cls', sorted({cls for cls, fmt in FORMATS
                                        if fmt == 'pytorch_model.bin'}))
def test_both_formats_read_to_the_same_tensors(cls):
  a = convert.read_state_dict(str(FIXTURES / cls / 'model.safetensors'))
  b = convert.read_state_dict(str(FIXTURES / cls / 'pytorch_model.bin'))
  assert a.keys() == b.keys()
  for key in a:
    assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
    assert a[key].tobytes() == b[key].tobytes(), key


@pytest.mark.parametrize('cls', CLASSES)
def test_round_trip_is_bit_identical(cls, tmp_path):
  """transformers -> from_transformers -> to_transformers gives the same tensors."""
  c = convert.from_transformers(str(FIXTURES / cls))
  out = convert.to_transformers((c.name, c.kwargs), c.params, c.state,
                                str(tmp_path / 'out'), base_config=c.config)
  original = convert.read_state_dict(str(FIXTURES / cls / 'model.safetensors'))
  written = convert.read_state_dict(os.path.join(out, 'model.safetensors'))
  assert written.keys() == original.keys()
  for key in original:
    assert written[key].dtype == original[key].dtype, key
    assert written[key].shape == original[key].shape, key
    assert written[key].tobytes() == original[key].tobytes(), key
  with open(os.path.join(out, 'config.json')) as f:
    config = json.load(f)
  assert hf_config.builder_kwargs(config) == hf_config.builder_kwargs(c.config)
  assert config['hidden_act'] == c.config['hidden_act']


@pytest.mark.parametrize('cls,change', [
    # The differences from DeepMind's published models that conversion must keep.
    ('PerceiverForImageClassificationConvProcessing', 'same_padding'),
    ('PerceiverForImageClassificationLearned', 'no_query_residual'),
    ('PerceiverForImageClassificationFourier', 'other_gelu'),
])
def test_transformers_variants_matter(cls, change):
  """The published function instead of transformers' misses its outputs by far."""
  c = convert.from_transformers(str(FIXTURES / cls))
  kwargs = json.loads(json.dumps(c.kwargs))
  exact = c.config['hidden_act'] == 'gelu'
  if change == 'same_padding':
    kwargs['input_preprocessor']['conv_padding'] = 'same'
  elif change == 'no_query_residual':
    kwargs['decoder']['use_query_residual'] = False
  else:  # GELU: exact (erf) for 'gelu', tanh for 'gelu_new': differ ~2e-4 here.
    exact = not exact
  model = convert.build(c.name, kwargs, exact_gelu=exact)
  inputs, outputs = _recorded(cls)
  got = run(c._replace(model=model), inputs)
  key = next(iter(outputs))
  assert relative_error(got[key], outputs[key]) > (RTOL if change == 'other_gelu'
                                                   else 10 * RTOL)


def test_missing_and_unexpected_tensors_are_listed(tmp_path):
  from safetensors.numpy import save_file
  cls = 'PerceiverForImageClassificationFourier'
  folder = tmp_path / cls
  folder.mkdir()
  shutil.copy(FIXTURES / cls / 'config.json', folder)
  tensors = convert.read_state_dict(str(FIXTURES / cls / 'model.safetensors'))
  gone = 'perceiver.encoder.self_attends.1.mlp.dense2.weight'
  del tensors[gone]
  tensors['perceiver.extra.weight'] = np.zeros(3, np.float32)
  tensors['perceiver.embeddings.latents'] = np.zeros((2, 2), np.float32)
  save_file(tensors, str(folder / 'model.safetensors'))
  with pytest.raises(ValueError) as error:
    convert.from_transformers(str(folder))
  message = str(error.value)
  for part in (f'missing: {gone}', 'unexpected: perceiver.extra.weight',
               'wrong shape: perceiver.embeddings.latents', 'model.safetensors'):
    assert part in message, message


def test_truncated_safetensors_names_the_file(tmp_path):
  cls = 'PerceiverForMaskedLM'
  folder = tmp_path / cls
  folder.mkdir()
  shutil.copy(FIXTURES / cls / 'config.json', folder)
  data = (FIXTURES / cls / 'model.safetensors').read_bytes()
  (folder / 'model.safetensors').write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match='model.safetensors: not a readable safetensors'):
    convert.from_transformers(str(folder))


def test_other_models_and_unsupported_options_are_refused(tmp_path):
  config = json.loads((FIXTURES / 'PerceiverForOpticalFlow' / 'config.json').read_text())
  with pytest.raises(ValueError, match='architectures'):
    hf_config.builder_kwargs(dict(config, architectures=['PerceiverModel']))
  with pytest.raises(ValueError, match='hidden_act'):
    hf_config.gelu_is_exact(dict(config, hidden_act='relu'))
  with pytest.raises(ValueError, match='output_shape'):
    hf_config.builder_kwargs(dict(
        config, architectures=['PerceiverForMultimodalAutoencoding'], image_size=56,
        output_shape=[1, 16, 200, 200]))
  with pytest.raises(ValueError, match='no config.json'):
    convert.from_transformers(str(tmp_path))


def test_options_transformers_cannot_express_are_refused():
  from perceiver_agents import zoo
  _, learned = zoo.PUBLISHED['imagenet_learned_position_encoding']
  # DeepMind's learned-position classifier decodes without the query residual;
  # transformers' class always adds it.
  with pytest.raises(ValueError, match='decoder.use_query_residual=False'):
    hf_config.transformers_config('imagenet_learned_position_encoding', learned,
                                  image_size=224)
  _, flow = zoo.PUBLISHED['optical_flow']
  with pytest.raises(ValueError, match='num_bands=32'):
    hf_config.transformers_config('optical_flow', dict(flow, num_bands=32))
  # Options that change neither parameters nor outputs are not in the way.
  config = hf_config.transformers_config(
      'optical_flow', dict(flow, decode_chunk_size=1024, flow_scale_factor=1.0))
  assert config['architectures'] == ['PerceiverForOpticalFlow']


def test_bfloat16_safetensors_are_read(tmp_path):
  """numpy's safetensors API cannot type bfloat16; those files are read directly."""
  import ml_dtypes
  tensors = {'a': np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16),
             'b': np.array([3], np.int64)}
  header, offset, blobs = {}, 0, []
  for key, value in tensors.items():
    raw = value.tobytes()
    header[key] = {'dtype': 'BF16' if value.dtype == ml_dtypes.bfloat16 else 'I64',
                   'shape': list(value.shape), 'data_offsets': [offset, offset + len(raw)]}
    offset += len(raw)
    blobs.append(raw)
  text = json.dumps(header).encode()
  path = tmp_path / 'model.safetensors'
  path.write_bytes(len(text).to_bytes(8, 'little') + text + b''.join(blobs))
  read = convert.read_state_dict(str(path))
  assert read['a'].dtype == ml_dtypes.bfloat16 and read['b'].dtype == np.int64
  np.testing.assert_array_equal(read['a'].astype(np.float32), np.arange(6).reshape(2, 3))
  np.testing.assert_array_equal(read['b'], [3])
