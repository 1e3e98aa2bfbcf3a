"""zoo params -> to_transformers -> transformers' from_pretrained: the same outputs.

Needs torch + transformers (the bench extra), so it is skipped where they are missing
(CI); the round trip without torch is test_from_transformers.py's bit-identical one.
"""

import importlib.util
import pathlib
import sys

import jax
import numpy as np
import pytest

from perceiver_agents import convert
from perceiver_agents.convert import hf_config

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tests'))
sys.path.insert(0, str(REPO / 'tests' / 'convert'))
import helpers  # pylint: disable=g-import-not-at-top,wrong-import-position
import test_from_transformers as fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position


def _generator():
  spec = importlib.util.spec_from_file_location(
      'make_transformers_fixtures', REPO / 'benchmarks' / 'make_transformers_fixtures.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('cls', fixtures.CLASSES)
def test_zoo_params_load_into_transformers_with_the_same_outputs(cls, tmp_path):
  # The fixture's sizes, fresh random params in the zoo's layout (tanh GELU, as
  # published: to_transformers writes hidden_act='gelu_new').
  name, kwargs = hf_config.builder_kwargs(
      fixtures.json.loads((fixtures.FIXTURES / cls / 'config.json').read_text()))
  model = convert.build(name, kwargs)
  inputs, _ = fixtures._recorded(cls)  # pylint: disable=protected-access
  side = inputs['images'].shape[2] if name.startswith('imagenet_') else None
  expected = convert.expected_trees(model, convert.sample_inputs(name, kwargs,
                                                                 image_size=side))
  params = helpers.random_params(expected['params'], seed=3)
  state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), expected['state'])
  for module in state:  # BatchNorm statistics: some steps in, positive variance.
    rng = np.random.RandomState(4)
    shape = state[module]['average'].shape
    state[module]['average'] = (0.5 + rng.rand(*shape) if 'var_ema' in module
                                else rng.randn(*shape)).astype(np.float32)
    state[module]['counter'] = np.array(11, np.int32)
    state[module]['hidden'] = state[module]['average'] * np.float32(1 - 0.9 ** 11)
  out = convert.to_transformers((name, kwargs), params, state, str(tmp_path / 'hf'))

  hf, info = getattr(transformers, cls).from_pretrained(out, output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys'], info
  theirs = _generator().run(cls, hf.eval(), inputs)
  mine = fixtures.run(convert.Converted(name, kwargs, model, params, state, {}), inputs)
  fixtures.assert_matches(cls, mine, theirs)
  # And back: the written folder converts to the params it came from.
  again = convert.from_transformers(out)
  for module, leaves in params.items():
    for leaf, value in leaves.items():
      np.testing.assert_array_equal(again.params[module][leaf], value)
