"""Tests for parameter files: DeepMind pickles (restricted) and the project's .npz."""

import collections
import os
import pickle
import subprocess

import numpy as np
import pytest

from perceiver_agents import params_io


def _params():
  return {
      'perceiver_encoder/~/cross_attention/layer_norm': {
          'scale': np.ones([4], np.float32), 'offset': np.zeros([4], np.float32)},
      'embed': {'embeddings': np.arange(12, dtype=np.float32).reshape(3, 4)},
      'counts': {'n': np.array(3, np.int32), 'flags': np.array([True, False])},
  }


def _state():
  return {'batchnorm/~/mean_ema': {'average': np.full([1, 4], 0.5, np.float64),
                                   'counter': np.array(7, np.int32)}}


def _assert_trees_equal(a, b):
  assert a.keys() == b.keys()
  for module in a:
    assert a[module].keys() == b[module].keys(), module
    for name in a[module]:
      assert a[module][name].dtype == b[module][name].dtype, (module, name)
      np.testing.assert_array_equal(a[module][name], b[module][name])


# ---- the project's .npz format -----------------------------------------------------------


def test_npz_round_trip_params_and_state(tmp_path):
  path = tmp_path / 'ckpt.npz'
  params_io.save_params(path, _params(), state=_state())
  params, state = params_io.load_params(path)
  _assert_trees_equal(params, _params())
  _assert_trees_equal(state, _state())
  with np.load(path) as npz:  # the documented key layout
    assert 'params/perceiver_encoder/~/cross_attention/layer_norm/scale' in npz.files
    assert 'state/batchnorm/~/mean_ema/counter' in npz.files
  assert os.listdir(tmp_path) == ['ckpt.npz']  # no temporary file left behind


def test_npz_params_only_and_overwrite(tmp_path):
  path = tmp_path / 'p'  # used exactly as given: no '.npz' appended
  params_io.save_params(path, {'a': {'w': np.zeros([2], np.float32)}})
  params_io.save_params(path, _params())
  loaded = params_io.load_params(path)
  _assert_trees_equal(loaded.params, _params())
  assert loaded.state == {}
  assert os.listdir(tmp_path) == ['p']


def test_npz_save_refuses_bad_trees(tmp_path):
  path = tmp_path / 'x.npz'
  with pytest.raises(ValueError, match='params.*object'):
    params_io.save_params(path, {'m': {'w': np.array([None, 1], dtype=object)}})
  with pytest.raises(ValueError, match=r'state.*m/w.*float'):
    params_io.save_params(path, _params(), state={'m': {'w': 1.0}})
  with pytest.raises(ValueError, match='names.*/'):
    params_io.save_params(path, {'m': {'a/b': np.zeros(1)}})
  with pytest.raises(ValueError, match='module'):
    params_io.save_params(path, {'m': np.zeros(1)})
  assert not path.exists()


def test_npz_load_refuses_object_arrays_and_foreign_keys(tmp_path):
  objects = tmp_path / 'objects.npz'
  np.savez(objects, **{'params/m/w': np.array([{'x': 1}], dtype=object)})
  with pytest.raises(ValueError, match='objects.npz.*object'):
    params_io.load_params(objects)
  foreign = tmp_path / 'foreign.npz'
  np.savez(foreign, **{'params/m/w': np.zeros(2), 'inputs/x': np.zeros(2)})
  with pytest.raises(ValueError, match="'inputs/x'"):
    params_io.load_params(foreign)


def test_npz_load_refuses_corrupt_files(tmp_path):
  path = tmp_path / 'c.npz'
  params_io.save_params(path, _params())
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(ValueError, match='c.npz'):
    params_io.load_params(path)
  pickled = tmp_path / 'pickled.npz'
  pickled.write_bytes(pickle.dumps({'a': 1}))
  with pytest.raises(ValueError, match='pickled.npz'):
    params_io.load_params(pickled)


# ---- DeepMind .pystate pickles -------------------------------------------------------------


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_load_genuine_pickle(tmp_path, protocol):
  tree = {
      'params': collections.OrderedDict(_params()),
      'state': _state(),
  }
  tree['params']['scalar'] = {'s': np.float32(2.5), 'zero_d': np.array(3.0)}
  path = tmp_path / 'imagenet.pystate'
  path.write_bytes(pickle.dumps(tree, protocol=protocol))
  loaded = params_io.load_deepmind_checkpoint(path)
  assert type(loaded) is dict and type(loaded['params']) is dict
  params, state = params_io.split_params_and_state(loaded)
  _assert_trees_equal(state, _state())
  assert params['scalar']['s'].shape == () and params['scalar']['s'] == np.float32(2.5)
  assert params['scalar']['zero_d'].shape == ()
  del params['scalar']
  _assert_trees_equal(params, _params())


def test_split_bare_params_tree():
  params, state = params_io.split_params_and_state(_params())
  assert params.keys() == _params().keys() and state == {}
  # A module that happens to be called 'params' is not mistaken for the wrapper.
  bare = {'params': {'w': np.zeros(1)}}
  assert params_io.split_params_and_state(bare) == (bare, {})


class _RunsCommand:

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


def test_pickle_that_runs_a_command_is_refused(tmp_path):
  marker = tmp_path / 'pwned'
  path = tmp_path / 'evil.pystate'
  path.write_bytes(pickle.dumps({'params': {'m': {'w': _RunsCommand(marker)}}}))
  with pytest.raises(ValueError, match=r'evil\.pystate.*(posix|os)\.system'):
    params_io.load_deepmind_checkpoint(path)
  assert not marker.exists()


@pytest.mark.parametrize('payload,name', [
    ((eval, ('1 + 1',)), 'builtins.eval'),
    ((subprocess.Popen, (['true'],)), 'subprocess.Popen'),
])
def test_pickle_with_other_callables_is_refused(tmp_path, payload, name):

  class Payload:

    def __reduce__(self):
      return payload

  path = tmp_path / 'evil.pystate'
  path.write_bytes(pickle.dumps([Payload()]))
  with pytest.raises(ValueError, match=name):
    params_io.load_deepmind_checkpoint(path)


def test_corrupt_or_truncated_pickle(tmp_path):
  path = tmp_path / 'cut.pystate'
  path.write_bytes(pickle.dumps(_params(), protocol=4)[:-40])
  with pytest.raises(ValueError, match=r'cut\.pystate.*truncated'):
    params_io.load_deepmind_checkpoint(path)
  path.write_bytes(b'not a pickle at all')
  with pytest.raises(ValueError, match=r'cut\.pystate'):
    params_io.load_deepmind_checkpoint(path)


@pytest.mark.parametrize('tree,match', [
    ({'m': {'w': 1.5}}, "'m/w' is a float"),
    ({'m': {'w': [1, 2]}}, "'m/w' is a list"),
    ({'m': {'w': np.array(['a'])}}, "'m/w' has dtype <U1"),
    ([np.zeros(1)], 'top level is a list'),
    ({}, 'empty'),
    ({1: {'w': np.zeros(1)}}, 'keys must be strings'),
])
def test_non_array_leaves_are_refused(tmp_path, tree, match):
  path = tmp_path / 'odd.pystate'
  path.write_bytes(pickle.dumps(tree))
  with pytest.raises(ValueError, match=match):
    params_io.load_deepmind_checkpoint(path)


def test_codecs_encode_only_for_latin1(tmp_path):
  import codecs  # pylint: disable=g-import-not-at-top

  class Payload:

    def __reduce__(self):
      return (codecs.encode, ('x', 'rot13'))

  path = tmp_path / 'codec.pystate'
  path.write_bytes(pickle.dumps({'m': {'w': Payload()}}, protocol=2))
  with pytest.raises(ValueError, match=r"codec\.pystate.*'rot13'"):
    params_io.load_deepmind_checkpoint(path)


def test_npz_load_refuses_a_single_npy(tmp_path):
  path = tmp_path / 'one.npy'
  np.save(path, np.zeros(2))
  with pytest.raises(ValueError, match=r'one\.npy.*single \.npy'):
    params_io.load_params(path)
