"""The two kernel implementations of blocks/ops.py compute the same published models.

For every small conformance case (tests/fixtures/conformance, via tests/helpers.py):
the same parameter tree under 'reference' and 'fast', and equal outputs and parameter
gradients within float32 tolerance.
"""
import pathlib
import sys

import chex
import jax
import jax.numpy as jnp
import pytest

from perceiver_agents import kernels
from perceiver_agents import zoo

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import helpers  # noqa: E402  (tests/helpers.py)

SMALL = helpers.CONFORMANCE_CASES


def _loss_fn(case, x):
  """params -> (a scalar of every float output, the outputs), for `case`'s model."""
  model = getattr(zoo, case['builder'])(**case['kwargs'])
  key = jax.random.PRNGKey(case['seed'])

  def loss(params, state):
    if case['with_state']:
      out = model.apply(params, state, key, **x, is_training=False)[0]
    else:
      out = model.apply(params, key, **x, is_training=False)
    leaves = [y for y in jax.tree.leaves(out) if jnp.issubdtype(y.dtype, jnp.floating)]
    total = sum(jnp.sum(jnp.sin(y) * (1.0 + jnp.arange(y.size).reshape(y.shape) % 3))
                for y in leaves)
    return total, out

  return model, loss


@pytest.mark.parametrize('name', sorted(SMALL))
def test_outputs_and_gradients_equal_under_both(name):
  case, params, state, x, _ = helpers.conformance_case(name)
  results, trees = {}, {}
  for impl in kernels.IMPLEMENTATIONS:
    with kernels.use(impl):
      model, loss = _loss_fn(case, x)
      trees[impl] = jax.eval_shape(
          lambda m=model: m.init(jax.random.PRNGKey(0), **x, is_training=True))
      # A fresh function per implementation: the choice is read when tracing.
      grad = jax.jit(jax.grad(lambda p, s, f=loss: f(p, s), has_aux=True))
      results[impl] = grad(params, state)
  chex.assert_trees_all_equal_shapes_and_dtypes(trees['reference'], trees['fast'])
  (grads_ref, out_ref), (grads_fast, out_fast) = results['reference'], results['fast']
  chex.assert_trees_all_close(out_fast, out_ref, rtol=1e-4, atol=1e-5)
  # Gradients within float32 tolerance of the largest one (summation orders differ;
  # some are zero up to rounding, e.g. of a bias that a LayerNorm removes).
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_ref))
  chex.assert_trees_all_close(grads_fast, grads_ref, rtol=1e-3, atol=1e-5 * scale)
