"""`perceiver-agents convert` and transformers folders wherever predict takes a checkpoint."""

import json
import pathlib

import jax
import numpy as np
import pytest

from perceiver_agents import cli
from perceiver_agents import convert
from perceiver_agents import params_io
from perceiver_agents.learner import apply_overrides
from perceiver_agents.tasks import mlm
from perceiver_agents.tasks import pretrained

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / 'fixtures' / 'transformers'
FOURIER = FIXTURES / 'PerceiverForImageClassificationFourier'


def test_convert_from_and_back_to_transformers(tmp_path, capsys):
  npz = tmp_path / 'fourier.npz'
  assert cli.main(['convert', '--from-transformers', str(FOURIER), '--out', str(npz)]) == 0
  report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert report['model'] == 'imagenet_fourier_position_encoding'
  params, state = params_io.load_params(npz)
  c = convert.from_transformers(str(FOURIER))
  jax.tree.map(np.testing.assert_array_equal, params, c.params)
  assert report['params'] == sum(v.size for m in params.values() for v in m.values())
  assert state == {}

  out = tmp_path / 'hf'
  assert cli.main(['convert', '--to-transformers', str(out), '--params', str(npz)]) == 0
  original = convert.read_state_dict(str(FOURIER / 'model.safetensors'))
  written = convert.read_state_dict(str(out / 'model.safetensors'))
  assert written.keys() == original.keys()
  assert all(written[k].tobytes() == original[k].tobytes() and
             written[k].dtype == original[k].dtype for k in original)


def test_convert_errors_exit_2(tmp_path, capsys):
  assert cli.main(['convert', '--from-transformers', str(FOURIER)]) == 2
  assert '--out: required' in capsys.readouterr().err
  assert cli.main(['convert', '--from-transformers', str(tmp_path), '--out',
                   str(tmp_path / 'x.npz')]) == 2
  assert 'no config.json' in capsys.readouterr().err
  npz = tmp_path / 'p.npz'
  params_io.save_params(npz, {'a': {'w': np.zeros(2, np.float32)}})
  assert cli.main(['convert', '--to-transformers', str(tmp_path / 'o'), '--params',
                   str(npz), '--model', 'optical_flow']) == 2
  assert 'params: do not fit the model' in capsys.readouterr().err


def test_weights_loaders_take_transformers_folders():
  params, state = pretrained.load_weights(str(FOURIER))
  c = convert.from_transformers(str(FOURIER))
  jax.tree.map(np.testing.assert_array_equal, (params, state), (c.params, c.state))
  assert pretrained.is_transformers_dir(str(FOURIER))
  assert not pretrained.is_transformers_dir(str(FOURIER / 'config.json'))


def test_predict_mlm_takes_a_transformers_folder(tmp_path, capsys):
  # Sizes the mlm task and transformers' PerceiverForMaskedLM (8 decoder heads, 256
  # query/key channels) can both express.
  config = apply_overrides(mlm.get_config(), [
      'model.max_seq_len=16', 'model.d_model=16', 'model.num_latents=4',
      'model.num_latent_channels=16', 'model.num_self_attends=1',
      'model.num_self_attend_heads=2', 'model.num_cross_attend_heads=8',
      'model.qk_channels=256'])
  kwargs = mlm.model_kwargs(config.model)
  lm = convert.build('language_perceiver', kwargs)
  ids = np.zeros((1, 16), np.int32)
  params = jax.jit(lm.init)(jax.random.PRNGKey(0), ids, ids > -1)
  folder = tmp_path / 'language-perceiver'
  convert.to_transformers(('language_perceiver', kwargs), params, None, str(folder))
  assert cli.main(['predict', 'mlm', '--checkpoint', str(folder),
                   '--text', 'ab<mask:2>cd']) == 0
  captured = capsys.readouterr()
  assert 'transformers PerceiverForMaskedLM' in captured.err
  filled = json.loads(captured.out.strip().splitlines()[-1])['filled']
  assert filled.startswith('ab') and filled.endswith('cd')
  # A transformers MLM whose decoder the task cannot tie to its encoder is refused.
  with pytest.raises(ValueError, match='the mlm task cannot build this model'):
    mlm.load_mlm_params(str(FIXTURES / 'PerceiverForMaskedLM'))


def test_load_for_predict_takes_a_transformers_folder(tmp_path):
  """A task's predict (here optical_flow's) restores weights from a transformers folder."""
  from perceiver_agents.tasks import optical_flow
  from perceiver_agents.tasks import workdir
  overrides = ['model.train_size=(8, 8)', 'model.num_bands=64', 'model.num_latents=4',
               'model.num_latent_channels=16', 'model.num_self_attends=1',
               'model.num_self_attend_heads=2']
  config = apply_overrides(optical_flow.get_config(), overrides)
  kwargs = optical_flow.model_kwargs(config)
  flow = convert.build('optical_flow', kwargs)
  params = jax.jit(flow.init)(jax.random.PRNGKey(0), np.zeros((1, 2, 8, 8, 3), np.float32))
  folder = tmp_path / 'optical-flow-perceiver'
  convert.to_transformers(('optical_flow', kwargs), params, None, str(folder))
  _, restored, state = workdir.load_for_predict(
      optical_flow, 'optical_flow', str(folder), overrides, optical_flow._zero_batch)  # pylint: disable=protected-access
  jax.tree.map(np.testing.assert_array_equal, restored, jax.device_get(params))
  assert state == {}
