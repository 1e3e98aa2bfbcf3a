"""The zoo computes DeepMind's published functions and loads their checkpoint files.

Fixtures in tests/fixtures/conformance are copies of shared/conformance's vectors:
parameters recorded from the released models (perturbed so no output is trivial),
their inputs and outputs, and the full-size parameter trees.
"""
import copy
import json
import os
import pathlib
import pickle
import sys

import jax
import numpy as np
import pytest

from perceiver_agents import zoo

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import helpers  # noqa: E402  (tests/helpers.py)

FIXTURES = helpers.CONFORMANCE
SMALL = helpers.CONFORMANCE_CASES
FULL = json.loads((FIXTURES / 'full_param_trees.json').read_text())
_case = helpers.conformance_case


def _shapes(tree):
  return {f'{m}/{n}': list(np.shape(v)) for m, d in tree.items()
          for n, v in d.items()}


def _apply(case, params, state, x):
  f = getattr(zoo, case['builder'])(**case['kwargs'])
  key = jax.random.PRNGKey(case['seed'])
  if case['with_state']:
    return f.apply(params, state, key, **x, is_training=False)[0]
  return f.apply(params, key, **x, is_training=False)


def _relative_error(got, want):
  got = np.asarray(got, np.float64)
  return np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12)


@pytest.mark.parametrize('name', sorted(SMALL))
def test_small_model_matches_published_outputs(name):
  case, params, state, x, arrays = _case(name)
  f = getattr(zoo, case['builder'])(**case['kwargs'])
  init = jax.eval_shape(
      lambda: f.init(jax.random.PRNGKey(0), **x, is_training=True))
  got_params, got_state = init if case['with_state'] else (init, {})
  assert _shapes(got_params) == _shapes(params)
  assert _shapes(got_state) == _shapes(state)

  y = _apply(case, params, state, x)
  y = y if isinstance(y, dict) else {'out': y}
  assert sorted(y) == sorted(case['outputs'])
  for key, shape in case['outputs'].items():
    assert list(y[key].shape) == shape
    assert _relative_error(y[key], arrays[f'outputs/{key}']) < 1e-4, key


def _full_size_inputs(name, kwargs):
  if name == 'language_perceiver':
    t = kwargs['max_seq_len']
    return dict(inputs=np.zeros((1, t), np.int32),
                input_mask=np.ones((1, t), bool))
  if name.startswith('imagenet'):
    return dict(images=np.zeros((1, 224, 224, 3), np.float32))
  if name == 'optical_flow':
    return dict(images=np.zeros((1, 2, *kwargs['train_size'], 3), np.float32))
  t, s = kwargs['num_frames'], kwargs['image_size']
  return dict(
      images=np.zeros((1, t, s, s, 3), np.float32),
      audio=np.zeros((1, t * kwargs['audio_samples_per_frame'], 1), np.float32),
      subsampling=dict(image=np.arange(64, dtype=np.int32),
                       audio=np.arange(16, dtype=np.int32)))


@pytest.mark.parametrize('name', sorted(FULL))
def test_full_size_parameter_tree(name):
  case = FULL[name]
  builder, kwargs = zoo.PUBLISHED[name]
  assert builder == case['builder']
  f = zoo.build(name)
  x = _full_size_inputs(name, case['kwargs'])
  init = jax.eval_shape(lambda: f.init(jax.random.PRNGKey(0), **x,
                                       is_training=True))
  params = init[0] if isinstance(init, tuple) else init
  assert _shapes(params) == case['params']
  assert sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params)) == (
      case['num_params'])


def test_published_configs_are_the_recorded_ones():
  for name, case in FULL.items():
    builder, kwargs = zoo.PUBLISHED[name]
    assert json.loads(json.dumps(kwargs)) == case['kwargs'], name


@pytest.mark.parametrize('name', ['language_perceiver',
                                  'imagenet_conv_preprocessing'])
def test_released_checkpoint_file_loads_and_gives_published_outputs(
    name, tmp_path):
  case, params, state, x, arrays = _case(name)
  # A released file is a pickle of nested dicts of numpy arrays; the ImageNet ones
  # hold {'params', 'state'}.
  payload = {'params': params, 'state': state} if case['with_state'] else params
  path = tmp_path / f'{name}.pystate'
  path.write_bytes(pickle.dumps(payload))
  loaded = zoo.load_checkpoint(path)
  if case['with_state']:
    loaded_params, loaded_state = loaded['params'], loaded['state']
  else:
    loaded_params, loaded_state = loaded, {}
  y = _apply(case, loaded_params, loaded_state, x)
  assert _relative_error(y, arrays['outputs/out']) < 1e-4


class _RunsACommand:

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


def test_checkpoint_that_would_run_a_command_is_refused(tmp_path):
  marker = tmp_path / 'pwned'
  path = tmp_path / 'evil.pystate'
  path.write_bytes(pickle.dumps({'encoder': {'w': _RunsACommand(marker)}}))
  with pytest.raises(ValueError, match='system'):
    zoo.load_checkpoint(path)
  assert not marker.exists()


def test_unknown_published_name_is_a_clear_error():
  with pytest.raises(ValueError, match='model name'):
    zoo.build('imagenet_resnet')


def test_language_model_rejects_wrong_length():
  case, params, _, x, _ = _case('language_perceiver')
  f = zoo.language_perceiver(**case['kwargs'])
  short = {k: v[:, :8] for k, v in x.items()}
  with pytest.raises(ValueError, match='max_seq_len'):
    f.apply(params, None, **short)


# The memory options (decode_chunk_size, the encoder's cross-attention chunking) give the
# published small models' recorded outputs.
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


def _intermediate_shapes(jaxpr):
  """Shapes of every value a jaxpr computes, sub-jaxprs (scan, pjit, ...) included."""
  shapes = set()
  for eqn in jaxpr.eqns:
    shapes.update(tuple(v.aval.shape) for v in eqn.outvars)
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else [param]:
        sub = getattr(sub, 'jaxpr', sub)  # a ClosedJaxpr's Jaxpr
        if hasattr(sub, 'eqns'):
          shapes |= _intermediate_shapes(sub)
  return shapes


@pytest.mark.parametrize('chunked', [False, True])
def test_chunked_flow_never_makes_the_full_fourier_inputs(chunked):
  """With chunking, the inputs' Fourier channels are expanded chunk by chunk: no
  [B, H*W, 64 + 2 + 4 * num_bands] array exists (without chunking it does)."""
  case, params, _, x, _ = _case('optical_flow')
  kwargs = copy.deepcopy(case['kwargs'])
  if chunked:
    kwargs['encoder']['cross_attend_kv_chunk_size'] = 50
  f = zoo.optical_flow_perceiver(decode_chunk_size=50 if chunked else None, **kwargs)
  images = x['images']  # [B, 2, H, W, 3]
  full = (images.shape[0], images.shape[2] * images.shape[3],
          64 + 2 + 4 * kwargs['num_bands'])
  shapes = _intermediate_shapes(
      jax.make_jaxpr(lambda p, x: f.apply(p, None, x))(params, images).jaxpr)
  assert (full in shapes) != chunked
  assert full[:2] + (64,) in shapes  # the compact features are there


@pytest.mark.parametrize('kv_chunk', [None, 3])
def test_chunked_whole_clip_decoding_matches_and_stays_small(kv_chunk):
  """A whole clip in one call: decode_chunk_size gives the unchunked outputs, and no
  array as long as the clip's image queries (2 x 8 x 8 = 128) is wider than the 3
  output channels (without chunking the queries [B, 128 + 4 + 1, 29] exist)."""
  case, params, state, x, _ = _case('video_autoencoder')
  kwargs = copy.deepcopy(case['kwargs'])
  whole = dict(images=x['images'], audio=x['audio'])
  want = jax.jit(lambda p, s, x: zoo.video_autoencoder(**kwargs).apply(
      p, s, None, **x)[0])(params, state, whole)
  kwargs['encoder']['cross_attend_kv_chunk_size'] = kv_chunk
  f = zoo.video_autoencoder(decode_chunk_size=7, **kwargs)
  got = jax.jit(lambda p, s, x: f.apply(p, s, None, **x)[0])(params, state, whole)
  assert sorted(got) == sorted(want) and got['image'].shape == (2, 128, 3)
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)

  def long_and_wide(fn):
    shapes = _intermediate_shapes(jax.make_jaxpr(fn)(params, state, whole).jaxpr)
    return {s for s in shapes if (128 in s or 133 in s) and s[-1] > 3}

  assert not long_and_wide(lambda p, s, x: f.apply(p, s, None, **x)[0])
  assert (2, 133, 29) in long_and_wide(
      lambda p, s, x: zoo.video_autoencoder(**case['kwargs']).apply(p, s, None, **x)[0])


# Tiled flow inference: the flow model at any image size.


@pytest.mark.parametrize('size,tile,overlap', [(30, 8, 4), (8, 8, 4), (9, 8, 2), (100, 16, 5)])
def test_tile_starts_cover_with_overlap(size, tile, overlap):
  starts = zoo.tile_starts(size, tile, overlap)
  assert starts[0] == 0 and starts[-1] + tile == max(size, tile)
  for a, b in zip(starts[:-1], starts[1:]):
    assert tile - (b - a) >= overlap


def test_tile_starts_refuse_an_overlap_as_large_as_the_tile():
  with pytest.raises(ValueError, match=r'min_overlap must be in \[0, 8\), got 8'):
    zoo.tile_starts(30, 8, 8)


def test_tiled_flow_blends_position_dependent_outputs_exactly():
  # A "model" whose flow is the frames' own first channel pair reproduces the input
  # exactly after blending, at any size, iff every tile is put back where it came from.
  frames = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 23, 37, 3))
  apply_tile = lambda tiles: tiles[:, 0, :, :, :2]
  out = zoo.tiled_flow(apply_tile, frames, (8, 12), 4)
  np.testing.assert_allclose(out, frames[:, 0, :, :, :2], atol=1e-5)
  small = zoo.tiled_flow(apply_tile, frames[:, :, :5, :7], (8, 12), 4)
  np.testing.assert_allclose(small, frames[:, 0, :5, :7, :2], atol=1e-5)
  w = zoo.tile_weights(4, 6)
  assert w[0, 0] == 1 and w[1, 2] == 2 and w.max() == 2
