"""Shared fixtures of the agent tests: tiny network configs."""

import pytest

from perceiver_agents.agents import networks


@pytest.fixture
def tiny_agent_config():
  c = networks.network_config()
  c.embedding_size = 8
  c.entity_size = 8
  c.num_latents = 4
  c.spatial_num_latents = 4
  c.num_channels = 8
  c.num_layers = 1
  c.num_heads = 2
  c.torso_size = 16
  c.core_size = 8
  return c

