"""Prepared TFDS datasets open; missing ones are one line saying how to prepare them."""

import pytest

from perceiver_agents.data import tfds_util

tfds = pytest.importorskip('tensorflow_datasets')


def test_not_prepared_names_dataset_place_and_command(tmp_path):
  with pytest.raises(ValueError) as e:
    tfds_util.load('glue/rte', split='train', data_dir=str(tmp_path), flag='data.data_dir')
  message = str(e.value)
  assert '\n' not in message
  assert message.startswith("--config.data.data_dir: TFDS dataset 'glue/rte' is not "
                            f'prepared in {tmp_path}')
  assert f'`tfds build glue/rte --data_dir={tmp_path}`' in message


def test_manual_datasets_say_so(tmp_path):
  with pytest.raises(ValueError, match=r'--manual_dir=DIR .*ILSVRC2012_img_train.tar'):
    tfds_util.load('imagenet2012', split='train', data_dir=str(tmp_path),
                   flag='data.data_dir')


def test_unknown_dataset(tmp_path):
  with pytest.raises(ValueError, match="'no_such_set' is not a TFDS dataset"):
    tfds_util.load('no_such_set', split='train', data_dir=str(tmp_path), flag='data.x')


def test_prepared_dataset_opens():
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = tfds_util.load('glue/rte', split='train', data_dir='', flag='data.data_dir')
    assert len(list(ds)) == 3
