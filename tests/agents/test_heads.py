"""Policy heads: masking, pointer/point/categorical arguments, log-probs and entropies."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_agents.agents import heads
from perceiver_agents.agents.specs import ActionSpec, ArgSpec

SPEC = ActionSpec(
    num_functions=3,
    args=(ArgSpec('queued', 'categorical', 2), ArgSpec('target', 'pointer'),
          ArgSpec('screen', 'point')),
    usage=np.array([[False, False, False], [True, True, False], [True, False, True]]))


def _run(action=None, action_mask=None, entity_mask=None, seed=0):
  def f(core, ents, cells):
    return heads.PolicyHeads(action_spec=SPEC)(
        core, action_mask=action_mask, entity_features=ents, entity_mask=entity_mask,
        cell_features=cells, action=action)
  model = hk.transform(f)
  rng = np.random.default_rng(seed)
  core = rng.normal(size=[4, 8]).astype(np.float32)
  ents = rng.normal(size=[4, 5, 6]).astype(np.float32)
  cells = rng.normal(size=[4, 3, 2, 6]).astype(np.float32)
  params = model.init(jax.random.PRNGKey(0), core, ents, cells)
  return model.apply(params, jax.random.PRNGKey(seed), core, ents, cells)


def test_shapes_and_sampling_respects_masks():
  action_mask = np.array([[False, True, False]] * 4)
  entity_mask = np.array([[True, False, False, False, False]] * 4)
  logits, action = _run(action_mask=action_mask, entity_mask=entity_mask, seed=1)
  assert logits['function'].shape == (4, 3)
  assert logits['target'].shape == (4, 5) and logits['screen'].shape == (4, 6)
  assert logits['queued'].shape == (4, 2)
  np.testing.assert_array_equal(action['function'], 1)
  np.testing.assert_array_equal(action['target'], 0)


def test_all_unavailable_gives_a_uniform_finite_distribution():
  logits, _ = _run(action_mask=np.zeros([4, 3], bool), entity_mask=np.zeros([4, 5], bool))
  probs = jax.nn.softmax(logits['function'])
  np.testing.assert_allclose(probs, 1 / 3, rtol=1e-5)
  np.testing.assert_allclose(jax.nn.softmax(logits['target']), 1 / 5, rtol=1e-5)


def test_log_prob_counts_only_the_arguments_the_function_uses():
  given = {'function': jnp.array([0, 1, 2, 2]), 'queued': jnp.array([1, 0, 1, 0]),
           'target': jnp.array([2, 3, 4, 0]), 'screen': jnp.array([5, 0, 1, 2])}
  logits, action = _run(action=given)
  for k in given:
    np.testing.assert_array_equal(action[k], given[k])
  logp = heads.log_prob(SPEC, logits, given)
  lsm = {k: jax.nn.log_softmax(v) for k, v in logits.items()}
  expected = [lsm['function'][0, 0],
              lsm['function'][1, 1] + lsm['queued'][1, 0] + lsm['target'][1, 3],
              lsm['function'][2, 2] + lsm['queued'][2, 1] + lsm['screen'][2, 1],
              lsm['function'][3, 2] + lsm['queued'][3, 0] + lsm['screen'][3, 2]]
  np.testing.assert_allclose(logp, expected, rtol=1e-5)
  ent = heads.entropy(SPEC, logits, given)
  h = {k: -jnp.sum(jnp.exp(v) * v, -1) for k, v in lsm.items()}
  np.testing.assert_allclose(ent[0], h['function'][0], rtol=1e-5)
  np.testing.assert_allclose(ent[1], h['function'][1] + h['queued'][1] + h['target'][1],
                             rtol=1e-5)
