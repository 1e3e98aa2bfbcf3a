"""Observation checks: specs that don't match, no available action, zero entities."""

import numpy as np
import pytest

from perceiver_agents.agents.envs import entity_micro
from perceiver_agents.agents.specs import ActionSpec, ArgSpec, EnvSpec


def _spec():
  return entity_micro.EntityMicroEnv().env_spec()


def test_a_good_observation_passes_and_zero_entities_is_valid():
  spec = _spec()
  obs = spec.zeros()
  obs['action_mask'][0] = True
  spec.check_observation(obs)  # entity_mask all False: zero entities is allowed.


@pytest.mark.parametrize('change,match', [
    (lambda o: o.pop('entity_mask'), r"missing \['entity_mask'\]"),
    (lambda o: o.update(extra=np.zeros(2)), r"unexpected \['extra'\]"),
    (lambda o: o.update(entities=np.zeros([3, 5], np.float32)),
     r"\['entities'\]: expected shape \[10, 5\], got \[3, 5\]"),
    (lambda o: o.update(entity_mask=np.zeros([10], np.float32)), 'expected a bool mask'),
    (lambda o: o.update(entities=np.full([10, 5], np.nan, np.float32)), 'NaN'),
    (lambda o: o.update(action_mask=np.zeros([2], bool)), 'no action type is available'),
])
def test_bad_observations_raise_naming_the_key(change, match):
  spec = _spec()
  obs = spec.zeros()
  obs['action_mask'][0] = True
  change(obs)
  with pytest.raises(ValueError, match=match):
    spec.check_observation(obs, where='env 0 observation')


def test_spec_construction_errors():
  with pytest.raises(ValueError, match='kind must be one of'):
    ArgSpec('x', 'continuous')
  with pytest.raises(ValueError, match='usage must have shape'):
    ActionSpec(num_functions=2, args=(ArgSpec('t', 'pointer'),), usage=np.ones([3, 1]))
  with pytest.raises(ValueError, match="pointer arguments need an 'entities'"):
    EnvSpec(observation={'scalars': ((3,), np.float32)},
            action=ActionSpec(num_functions=1, args=(ArgSpec('t', 'pointer'),),
                              usage=np.ones([1, 1])))
  with pytest.raises(ValueError, match="'action_mask' must have shape"):
    EnvSpec(observation={'scalars': ((3,), np.float32), 'action_mask': ((4,), np.bool_)},
            action=ActionSpec(num_functions=2))
