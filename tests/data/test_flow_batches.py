"""Optical-flow batches: pure in (seed, step), normalized, grouped by size for eval."""

import numpy as np
import pytest

from perceiver_agents.data import flow_batches, procedural_flow

TRAIN = dict(source='procedural', root='', seed=0, batch_size=2, out_size=(8, 12), margin=4,
             max_displacement=2.0)


def test_train_batches_are_pure_in_seed_and_step():
  b0 = flow_batches.train_batches(**TRAIN)(1)
  again = flow_batches.train_batches(**TRAIN)(1)
  for k in b0:
    np.testing.assert_array_equal(b0[k], again[k])
  assert b0['frames'].shape == (2, 2, 8, 12, 3) and b0['frames'].dtype == np.float32
  assert b0['flow'].shape == (2, 8, 12, 2) and b0['valid'].shape == (2, 8, 12)
  assert -1.0 <= b0['frames'].min() and b0['frames'].max() <= 1.0
  other = flow_batches.train_batches(**dict(TRAIN, seed=1))(1)
  assert not np.array_equal(b0['frames'], other['frames'])


def test_eval_pairs_use_their_own_seed_and_batch_by_size():
  examples = list(flow_batches.eval_examples(source='procedural', root='', seed=0, num_eval=3,
                                             size=(8, 12), max_displacement=2.0))
  first = procedural_flow.make_pair(seed=flow_batches.EVAL_SEED_OFFSET, index=0, height=8,
                                    width=12, max_displacement=2.0)
  np.testing.assert_array_equal(examples[0]['flow'], first['flow'])
  np.testing.assert_array_equal(flow_batches.stack(examples[:1])['frames'][0],
                                flow_batches.normalize(first['frames']))
  wide = procedural_flow.make_pair(seed=3, index=0, height=8, width=16, max_displacement=2.0)
  batches = list(flow_batches.eval_batches(examples + [wide], 2))
  assert [b['flow'].shape[:3] for b in batches] == [(2, 8, 12), (1, 8, 12), (1, 8, 16)]


def test_sources_and_dataset_folders_are_named():
  with pytest.raises(ValueError, match="data.source must be one of .*got 'nope'"):
    flow_batches.train_batches(**dict(TRAIN, source='nope'))
  with pytest.raises(ValueError, match=r'data.root: source .kitti. needs the dataset folder'):
    flow_batches.train_batches(**dict(TRAIN, source='kitti'))
  zeros = flow_batches.zero_batch(3, (4, 5))
  assert zeros['frames'].shape == (3, 2, 4, 5, 3) and zeros['valid'].all()
