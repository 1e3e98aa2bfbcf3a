"""The zoo's memory options (decode_chunk_size, the encoder's cross-attention chunking)
give the published small models' recorded outputs (tests/fixtures/conformance)."""
import copy
import json
import pathlib

import jax
import numpy as np
import pytest

from perceiver_agents import zoo

FIXTURES = pathlib.Path(__file__).parent / 'fixtures' / 'conformance'
SMALL = json.loads((FIXTURES / 'small_cases.json').read_text())


def _two_level(arrays, prefix):
  tree = {}
  for key, value in arrays.items():
    if key.startswith(prefix):
      module, _, name = key[len(prefix):].rpartition('/')
      tree.setdefault(module, {})[name] = value
  return tree


def _case(name):
  arrays = dict(np.load(FIXTURES / f'{name}.npz'))
  inputs = {}
  for key, value in arrays.items():
    if key.startswith('inputs/'):
      *outer, last = key.split('/')[1:]
      (inputs.setdefault(outer[0], {}) if outer else inputs)[last] = value
  return (SMALL[name], _two_level(arrays, 'params/'), _two_level(arrays, 'state/'),
          inputs, arrays)


def _relative_error(got, want):
  got = np.asarray(got, np.float64)
  return np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12)


@pytest.mark.parametrize('encoder_option', [None, 'cross_attend_kv_chunk_size'])
def test_chunked_flow_gives_the_published_outputs(encoder_option):
  case, params, _, x, arrays = _case('optical_flow')
  kwargs = copy.deepcopy(case['kwargs'])
  if encoder_option:
    kwargs['encoder'][encoder_option] = 50  # 12 * 16 = 192 inputs: 4 chunks
  f = zoo.optical_flow_perceiver(decode_chunk_size=50, **kwargs)  # 192 queries
  want = jax.jit(lambda p, x: zoo.optical_flow_perceiver(**case['kwargs']).apply(
      p, None, x))(params, x['images'])
  got = jax.jit(lambda p, x: f.apply(p, None, x))(params, x['images'])
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  assert _relative_error(got, arrays['outputs/out']) < 1e-4


def test_chunked_video_autoencoder_gives_the_published_outputs():
  case, params, state, x, arrays = _case('video_autoencoder')
  f = zoo.video_autoencoder(decode_chunk_size=7, **case['kwargs'])
  y = jax.jit(lambda p, s, x: f.apply(p, s, None, **x)[0])(params, state, x)
  for key in case['outputs']:
    assert _relative_error(y[key], arrays[f'outputs/{key}']) < 1e-4, key
