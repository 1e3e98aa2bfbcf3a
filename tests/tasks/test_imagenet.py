"""ImageNet task on tfds.testing.mock_data: each published variant trains a step and
evaluates through the CLI; the input pipeline is a pure function of (seed, step)."""

import json

import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from perceiver_agents import cli  # pylint: disable=g-import-not-at-top
from perceiver_agents.tasks import base, imagenet  # pylint: disable=g-import-not-at-top

TINY = ['preset=local', 'data.num_eval=6', 'train.steps=1', 'train.progress_bar=false']


@pytest.fixture(autouse=True)
def _mock_imagenet():
  with tfds.testing.mock_data(num_examples=10):
    yield


@pytest.mark.parametrize('variant', imagenet.VARIANTS)
def test_variant_trains_and_evaluates_through_cli(variant, tmp_path, capsys):
  args = ['--config.' + o for o in TINY + [f'model.variant={variant}']]
  assert cli.main(['train', 'imagenet', '--workdir', str(tmp_path)] + args) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result['step'] == 1
  assert set(result['eval']) == {'loss', 'top1', 'top5'}
  assert 0 <= result['eval']['top1'] <= result['eval']['top5'] <= 1
  if variant != 'conv_preprocessing':   # (train already ran an evaluation pass)
    return
  # predict: top-5 of an image file, from the workdir and from an exported .npz.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from perceiver_agents import params_io  # pylint: disable=g-import-not-at-top
  from perceiver_agents.tasks import workdir  # pylint: disable=g-import-not-at-top
  photo = str(tmp_path / 'photo.jpg')
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), np.uint8)).save(photo)
  assert cli.main(['predict', 'imagenet', '--checkpoint', str(tmp_path), photo]) == 0
  top5 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])['top5']
  assert len(top5) == 5 and 0 < sum(p for _, p in top5) <= 1.0 + 1e-6
  config = base.make_config(imagenet,
                                   TINY + [f'model.variant={variant}'])
  task = imagenet.build(config)
  params, state = workdir.restore(task.model, config, str(tmp_path), task.train_batch(0))
  weights = str(tmp_path / 'weights.npz')
  params_io.save_params(weights, params, state=state)
  assert cli.main(['predict', 'imagenet', '--checkpoint', weights, photo] + args) == 0
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])['top5'] == top5
  # Evaluating a weights file (as a released checkpoint) on the TFDS eval split.
  assert cli.main(['predict', 'imagenet', '--checkpoint', weights, '--eval'] + args) == 0
  report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert report['examples'] == 6
  assert report['top1'] == pytest.approx(result['eval']['top1'])
  assert report['top5'] == pytest.approx(result['eval']['top5'])
  assert cli.main(['predict', 'imagenet', '--checkpoint', str(tmp_path / 'x.pystate'),
                   photo]) == 2
  assert 'x.pystate' in capsys.readouterr().err


def test_train_batches_are_pure_in_seed_and_step():
  config = base.make_config(imagenet, TINY)
  stream = imagenet.build(config).train_batch
  batches = [stream(s) for s in range(4)]        # 16 draws from 10 examples: 2 epochs
  sought = imagenet.build(config).train_batch(3)  # a fresh stream seeks straight to step 3
  for k in sought:
    np.testing.assert_array_equal(batches[3][k], sought[k])
  assert batches[0]['image'].shape == (4, 16, 16, 3)
  assert batches[0]['soft_label'].shape == (4, 1000)
  np.testing.assert_allclose(batches[0]['soft_label'].sum(-1), 1.0, rtol=1e-5)
  assert not np.array_equal(batches[0]['image'], batches[1]['image'])
  other = base.make_config(imagenet, TINY + ['seed=1'])
  assert not np.array_equal(imagenet.build(other).train_batch(0)['image'],
                            batches[0]['image'])


def test_missing_dataset_names_data_dir(tmp_path):
  config = base.make_config(imagenet,
                                   TINY + ['data.name=imagenet2012_subset',
                                           f'data.data_dir={tmp_path}/nothing'])
  with tfds.testing.mock_data(num_examples=1, policy=tfds.testing.MockPolicy.USE_FILES):
    with pytest.raises(ValueError, match='data.data_dir'):
      imagenet.build(config)
