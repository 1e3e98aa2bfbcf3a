"""Opening prepared TFDS datasets, with one clear line when one is not prepared.

Tasks never download: TFDS's download path needs packages and network access that a
training machine may not have, and ends in a long traceback. Instead

    ds = tfds_util.load('glue/cola', split='train', data_dir='', flag='data.data_dir')

opens the prepared split (download=False) or raises ValueError naming the dataset, where
TFDS looked, and the command that prepares it.
"""

import logging
import os
from typing import Any, Optional


def default_data_dir() -> str:
  return os.environ.get('TFDS_DATA_DIR', os.path.expanduser('~/tensorflow_datasets'))


def not_prepared_message(name: str, *, data_dir: Optional[str], flag: str,
                         manual_instructions: str = '') -> str:
  where = data_dir or default_data_dir()
  manual = ' '.join(manual_instructions.split())
  if manual:
    manual = (f' (with --manual_dir=DIR where TFDS needs files downloaded by hand; its '
              f'note: "{manual[:240]}")')
  return (f'--config.{flag}: TFDS dataset {name!r} is not prepared in {where}; prepare '
          f'it with `tfds build {name} --data_dir={where}`{manual}, or set '
          f'--config.{flag} to the folder that holds it.')


def load(name: str, *, split: str, data_dir: Optional[str], flag: str,
         **kwargs: Any) -> Any:
  """tfds.load(name, split=..., data_dir=..., download=False) -> tf.data.Dataset.

  Args:
    flag: the config field that holds `data_dir` (named in the error).

  Raises:
    ValueError: `name` is not a TFDS dataset, or it is not prepared in `data_dir`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  absl = logging.getLogger('absl')
  level = absl.level
  absl.setLevel(logging.ERROR)  # TFDS warns of every empty folder it looked in.
  try:
    try:
      builder = tfds.builder(name, data_dir=data_dir or None)
    except tfds.core.registered.DatasetNotFoundError:
      raise ValueError(f'--config.{flag}: {name!r} is not a TFDS dataset.') from None
    try:
      return tfds.load(name, split=split, data_dir=data_dir or None, download=False,
                       **kwargs)
    except (AssertionError, FileNotFoundError):
      raise ValueError(not_prepared_message(
          name, data_dir=data_dir, flag=flag,
          manual_instructions=getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None) or ''
      )) from None
  finally:
    absl.setLevel(level)
