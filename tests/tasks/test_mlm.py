"""Tests of the `mlm` task: loss/metrics, the zoo param tree, train -> fill-mask via the CLI."""

import json
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_agents import cli
from perceiver_agents import zoo
from perceiver_agents.data import text as text_data
from perceiver_agents.tasks import mlm
from perceiver_agents.tasks.base import make_config

TINY = {'preset': 'local', 'train.steps': 2, 'train.progress_bar': False,
        'train.log_every': 1}


def tiny_config(**extra):
  items = dict(TINY, **extra)
  return make_config(mlm, [f'{k}={v}' for k, v in items.items()])


def test_loss_ignores_unmasked_bytes():
  rng = np.random.default_rng(0)
  targets = rng.integers(6, 262, size=(2, 8)).astype(np.int32)
  weights = np.zeros((2, 8), np.float32)
  weights[0, [1, 4]] = 1
  weights[1, 7] = 1
  batch = {'targets': targets, 'weights': weights}
  logits = rng.normal(size=(2, 8, 262)).astype(np.float32)
  base = mlm.masked_loss(jnp.asarray(logits), batch)
  changed = logits.copy()
  changed[weights == 0] = rng.normal(size=changed[weights == 0].shape) * 10
  np.testing.assert_allclose(mlm.masked_loss(jnp.asarray(changed), batch), base, rtol=1e-6)
  changed[0, 4, targets[0, 4]] += 5.0  # a selected byte: the loss moves
  assert not np.isclose(mlm.masked_loss(jnp.asarray(changed), batch)[0], base[0])
  # Uniform logits: the cross-entropy is log(262) at every selected byte.
  np.testing.assert_allclose(mlm.masked_loss(jnp.zeros((2, 8, 262)), batch),
                             [np.log(262)] * 2, rtol=1e-6)


def test_masked_accuracy_counts_selected_bytes_only():
  targets = np.array([[10, 11, 12, 13]], np.int32)
  weights = np.array([[1, 1, 0, 1]], np.float32)
  logits = jax.nn.one_hot(np.array([[10, 99, 12, 99]]), 262)  # right at 0 and 2 only
  out = mlm.masked_metrics(logits, {'targets': targets, 'weights': weights})
  np.testing.assert_allclose(out['masked_accuracy'], [1 / 3], rtol=1e-6)
  # A window with nothing selected has loss 0, not NaN.
  none = {'targets': targets, 'weights': np.zeros_like(weights)}
  assert float(mlm.masked_loss(logits, none)[0]) == 0.0


def test_model_has_the_zoo_param_tree():
  config = tiny_config()
  batch = {'inputs': np.full((1, 32), 10, np.int32), 'input_mask': np.ones((1, 32), bool)}
  key = jax.random.PRNGKey(0)
  params, state = jax.eval_shape(mlm.make_model(config.model).init, key, batch)
  zoo_params = jax.eval_shape(zoo.language_perceiver(**mlm.model_kwargs(config.model)).init,
                              key, batch['inputs'], batch['input_mask'])
  assert state == {}
  assert jax.tree.map(lambda x: x.shape, params) == \
      jax.tree.map(lambda x: x.shape, zoo_params)
  published = mlm.get_config().model
  published.size = 'published'
  assert mlm.model_kwargs(published) == zoo.PUBLISHED['language_perceiver'][1]


def test_parse_masked_text_and_bad_input():
  ids, masked = mlm.parse_masked_text('a<mask:2>é<mask>', window=16)
  np.testing.assert_array_equal(ids, [ord('a') + 6, 3, 3, 0xC3 + 6, 0xA9 + 6, 3])
  np.testing.assert_array_equal(masked, [False, True, True, False, False, True])
  with pytest.raises(ValueError, match='empty'):
    mlm.parse_masked_text('', window=16)
  with pytest.raises(ValueError, match='no <mask:N>'):
    mlm.parse_masked_text('no markers', window=16)
  with pytest.raises(ValueError, match='longer than the model.s window of 8 bytes'):
    mlm.parse_masked_text('<mask:2> and a long tail', window=8)
  ids, _ = mlm.parse_masked_text('<mask:2> and a long tail', window=8, truncate=True)
  assert len(ids) == 8
  with pytest.raises(ValueError, match='past the first 4 bytes'):
    mlm.parse_masked_text('long head <mask>', window=4, truncate=True)
  with pytest.raises(ValueError, match='not valid UTF-8'):
    mlm.parse_masked_text('bad \udcff <mask>', window=16)  # argv's undecodable byte


def test_train_then_fill_mask_through_the_cli(tmp_path, capsys):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  for i in range(4):
    (corpus / f'{i}.txt').write_text(f'the cat sat on mat number {i}.\nthe dog ran far.\n')
  workdir = tmp_path / 'run'
  args = ['train', 'mlm', '--workdir', str(workdir),
          f'--config.data.files={corpus}/*.txt'] + [f'--config.{k}={v}' for k, v in
                                                    TINY.items()]
  assert cli.main(args) == 0
  capsys.readouterr()
  text = 'the <mask:3> sat on the mat.'
  assert cli.main(['predict', 'mlm', '--checkpoint', str(workdir), '--text', text,
                   '--text', 'x<mask>y']) == 0
  out, err = capsys.readouterr()
  assert 'project checkpoint of `train mlm`' in err and 'step 2' in err
  lines = [json.loads(line) for line in out.strip().splitlines()]
  assert [line['text'] for line in lines] == [text, 'x<mask>y']
  filled = lines[0]['filled'].encode('utf-8', 'surrogatepass')
  assert filled.startswith(b'the ') and filled.endswith(b' sat on the mat.')
  assert '<mask' not in lines[0]['filled']
  # Bad input gets a clear error from the CLI, not a traceback.
  too_long = 'a' * 40 + '<mask>'
  assert cli.main(['predict', 'mlm', '--checkpoint', str(workdir), '--text', too_long]) == 2
  assert 'longer than the model' in capsys.readouterr().err
  bad_file = tmp_path / 'latin1.txt'
  bad_file.write_bytes('£<mask>'.encode('latin-1'))
  assert cli.main(['predict', 'mlm', '--checkpoint', str(workdir),
                   '--text-file', str(bad_file)]) == 2
  assert 'not valid UTF-8 at byte offset 0' in capsys.readouterr().err


def test_checkpoint_kinds_are_recognised(tmp_path):
  with pytest.raises(ValueError, match='does not exist'):
    mlm.load_mlm_params(str(tmp_path / 'missing'))
  with pytest.raises(ValueError, match='not a workdir'):
    mlm.load_mlm_params(str(tmp_path))
  # A DeepMind-format pickle of another model is recognised and refused by name.
  path = tmp_path / 'other.pickle'
  with open(path, 'wb') as f:
    pickle.dump({'linear': {'w': np.zeros((2, 2), np.float32)}}, f)
  with pytest.raises(ValueError, match='not of the language model'):
    mlm.load_mlm_params(str(path))
  # A language-model pickle with non-published shapes is refused naming the parameter.
  config = tiny_config()
  batch = {'inputs': np.zeros((1, 32), np.int32), 'input_mask': np.ones((1, 32), bool)}
  shapes, _ = jax.eval_shape(mlm.make_model(config.model).init, jax.random.PRNGKey(0),
                             batch)
  with open(path, 'wb') as f:
    pickle.dump(jax.tree.map(lambda x: np.zeros(x.shape, np.float32), shapes), f)
  with pytest.raises(ValueError, match=r'published language model\): .* is \(.*the model needs'):
    mlm.load_mlm_params(str(path))


def test_build_streams_mock_c4_and_wikipedia():
  tfds = pytest.importorskip('tensorflow_datasets')
  config = tiny_config(**{'data.source': 'c4+wikipedia', 'data.eval_windows': 3})
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    task = mlm.build(config)
    first = task.train_batch(2)
    again = task.train_batch(2)
    evals = list(task.eval_batches(2))
  assert first['inputs'].shape == (4, 32)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert sum(len(b['inputs']) for b in evals) == 3


def test_build_rejects_bad_data_config(tmp_path):
  with pytest.raises(ValueError, match='data.files: empty'):
    mlm.build(tiny_config())
  with pytest.raises(ValueError, match='data.source'):
    mlm.build(tiny_config(**{'data.source': 'c5'}))
  (tmp_path / 'x.txt').write_bytes(b'ok\xff')
  with pytest.raises(ValueError, match='not valid UTF-8'):
    mlm.build(tiny_config(**{'data.files': str(tmp_path / 'x.txt')}))
  assert text_data.MASK_RATE == 0.15
