"""--config overrides: typed, and unknown fields fail naming the field."""

import pytest

from perceiver_agents import learner


def test_overrides_parse_by_field_type():
  config = learner.apply_overrides(learner.default_config(), [
      'train.steps=7', 'optimizer.learning_rate=3e-4', 'mesh.fsdp=true',
      'optimizer.name=lamb', 'train.progress_bar=False', 'optimizer.clip_norm=2'])
  assert config.train.steps == 7 and isinstance(config.train.steps, int)
  assert config.optimizer.learning_rate == 3e-4
  assert config.mesh.fsdp is True and config.train.progress_bar is False
  assert config.optimizer.name == 'lamb'
  assert config.optimizer.clip_norm == 2.0 and isinstance(config.optimizer.clip_norm, float)


@pytest.mark.parametrize('override, message', [
    ('optimizer.lr=0.1', r"unknown config field 'optimizer.lr'.*optimizer.learning_rate"),
    ('train.stepz=3', r"'train.stepz'.*train.steps"),
    ('nosuch.section.field=1', r"'nosuch.section.field'"),
    ('train.steps=1.5', r'train.steps: expected a value of type int'),
    ('mesh.fsdp=maybe', r'mesh.fsdp: expected a bool'),
    ('optimizer=3', r"'optimizer' is a section"),
    ('train.steps', r'train.steps: expected --config.FIELD=VALUE'),
])
def test_bad_overrides_name_the_field(override, message):
  with pytest.raises(ValueError, match=message):
    learner.apply_overrides(learner.default_config(), [override])
