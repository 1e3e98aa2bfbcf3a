"""Fixtures of the IMPALA tests: a tiny agent config and one local Ray per test process."""

import pytest

from perceiver_agents import learner
from perceiver_agents.tasks import agent

TINY = [
    'agent.embedding_size=8', 'agent.entity_size=8', 'agent.num_latents=4',
    'agent.spatial_num_latents=4', 'agent.num_channels=8', 'agent.num_layers=1',
    'agent.num_heads=2', 'agent.torso_size=16', 'agent.core_size=8',
    'impala.unroll_length=3', 'train.batch_size=4', 'eval.batch_size=4',
    'train.progress_bar=false', 'checkpoint.every=0', 'train.log_every=1']


@pytest.fixture
def tiny_config():
  """tiny_config(*overrides) -> the agent task's config, tiny, on catch."""
  def make(*overrides):
    return learner.apply_overrides(agent.get_config(), TINY + ['env=catch'] + list(overrides))
  return make


@pytest.fixture(scope='session')
def local_ray():
  """A local Ray for this test process: 2 CPUs and a 200 MB object store, so that two
  pytest-xdist workers fit on a small machine; shut down at the end of the session."""
  import ray  # pylint: disable=g-import-not-at-top
  ray.init(address='local', num_cpus=2, object_store_memory=200 * 1024 ** 2,
           include_dashboard=False, logging_level='WARNING', log_to_driver=False)
  yield ray
  ray.shutdown()
