"""The digits task: a fixed, stratified split of real data, and a model that trains."""

import numpy as np

from perceiver_agents import learner
from perceiver_agents.tasks import base, digits


def test_split_is_fixed_stratified_and_disjoint():
  split = digits.load_split()
  train, test = split['train'], split['test']
  assert train['image'].shape == (1437, 8, 8, 1) and test['image'].shape == (360, 8, 8, 1)
  assert 0.0 <= train['image'].min() and train['image'].max() <= 1.0
  train_counts = np.bincount(train['label'], minlength=10)
  test_counts = np.bincount(test['label'], minlength=10)
  np.testing.assert_allclose(test_counts / (train_counts + test_counts), 0.2, atol=0.01)
  again = digits.load_split.__wrapped__()
  np.testing.assert_array_equal(again['test']['label'], test['label'])
  np.testing.assert_array_equal(again['test']['image'], test['image'])
  flat_train = {x.tobytes() for x in train['image']}
  assert sum(x.tobytes() in flat_train for x in test['image']) < 5  # A few true duplicates.


def test_affine_images_shift_and_identity():
  image = np.zeros((2, 3, 3, 1), np.float32)
  image[:, 1, 1, 0] = 1.0
  eye = np.tile(np.eye(2), (2, 1, 1))
  out = digits.affine_images(image, eye, np.array([[0.0, 0.0], [-1.0, 1.0]]))
  np.testing.assert_allclose(out[0], image[0])
  assert out[1, 2, 0, 0] == 1.0 and out[1].sum() == 1.0  # Moved down-left by one pixel.


def test_random_affine_within_bounds():
  matrices, offsets = digits.random_affine(np.random.default_rng(0), 100, max_shift=1,
                                           max_rotation=10.0, max_scale=0.1)
  assert matrices.shape == (100, 2, 2) and offsets.shape == (100, 2)
  assert set(np.unique(offsets)) == {-1.0, 0.0, 1.0}
  scales = 1.0 / np.sqrt(np.abs(np.linalg.det(matrices)))
  assert 0.9 <= scales.min() and scales.max() <= 1.1


def test_train_batches_are_deterministic():
  config = digits.get_config()
  task = digits.build(config)
  a, b = task.train_batch(3), task.train_batch(3)
  np.testing.assert_array_equal(a['image'], b['image'])
  assert a['image'].shape == (config.train.batch_size, 8, 8, 1)
  assert not np.array_equal(a['label'], task.train_batch(4)['label'])


def test_a_few_steps_run(tmp_path):
  config = base.make_config(digits, ['preset=local', 'train.steps=3',
                                     'train.progress_bar=false'])
  result = learner.train(digits.build(config), config, str(tmp_path))
  assert result.step == 3
  assert 0.0 <= result.eval_metrics['accuracy'] <= 1.0
  assert np.isfinite(result.train_metrics['loss'])
