"""Where arrays live on the `data` mesh."""

from jax.sharding import PartitionSpec as P

from perceiver_agents.learner import sharding


def test_fsdp_spec_splits_largest_divisible_dim():
  assert sharding.fsdp_spec((16, 64), 8) == P(None, 'data')
  assert sharding.fsdp_spec((64, 12), 8) == P('data', None)
  assert sharding.fsdp_spec((7, 9), 8) == P()
  assert sharding.fsdp_spec((), 8) == P()
  assert sharding.fsdp_spec((64,), 1) == P()


def test_mesh_has_data_axis_over_all_devices():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == ('data',)
