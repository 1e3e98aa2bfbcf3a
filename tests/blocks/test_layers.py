"""blocks.layers: Linear and LayerNorm match haiku's in names, values and gradients."""
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_agents.blocks import layers


def _pair(ours, theirs, x):
  """(params, apply) of both modules, the same parameters fed to each."""
  ours_t = hk.without_apply_rng(hk.transform(lambda x: ours()(x)))
  theirs_t = hk.without_apply_rng(hk.transform(lambda x: theirs()(x)))
  params = ours_t.init(jax.random.PRNGKey(0), x)
  params_theirs = theirs_t.init(jax.random.PRNGKey(0), x)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      params_theirs)
  for a, b in zip(jax.tree_util.tree_leaves(params),
                  jax.tree_util.tree_leaves(params_theirs)):
    np.testing.assert_array_equal(a, b)  # Same initialisers, same RNG use.
  # Non-trivial scale/offset/bias so that every gradient term is exercised.
  params = jax.tree_util.tree_map(
      lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(7), p.shape), params)
  return params, ours_t.apply, theirs_t.apply


@pytest.mark.parametrize('shape', [(3, 5, 6), (4, 6), (6,)])
@pytest.mark.parametrize('kind', ['linear', 'layer_norm'])
def test_values_and_gradients_match_haiku(kind, shape):
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  if kind == 'linear':
    ours, theirs = (lambda: layers.Linear(4)), (lambda: hk.Linear(4))
  else:
    ours = lambda: layers.LayerNorm()
    theirs = lambda: hk.LayerNorm(axis=-1, create_scale=True, create_offset=True,
                                  eps=1e-5)
  params, ours_apply, theirs_apply = _pair(ours, theirs, x)
  w = jax.random.normal(jax.random.PRNGKey(2), ours_apply(params, x).shape)
  np.testing.assert_allclose(ours_apply(params, x), theirs_apply(params, x),
                             rtol=1e-5, atol=1e-6)

  def loss(apply):
    return lambda p, x: jnp.sum(jnp.sin(apply(p, x)) * w)

  for jit in (False, True):
    grad_ours = jax.grad(loss(ours_apply), argnums=(0, 1))
    grad_theirs = jax.grad(loss(theirs_apply), argnums=(0, 1))
    if jit:
      grad_ours, grad_theirs = jax.jit(grad_ours), jax.jit(grad_theirs)
    got, want = grad_ours(params, x), grad_theirs(params, x)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_module_names_are_haiku_defaults():
  def f(x):
    return layers.LayerNorm()(layers.Linear(3)(x))
  params = hk.transform(f).init(jax.random.PRNGKey(0), jnp.ones((2, 4)))
  assert {k: sorted(v) for k, v in params.items()} == {
      'linear': ['b', 'w'], 'layer_norm': ['offset', 'scale']}


def test_scalar_input_is_refused():
  f = hk.transform(lambda x: layers.Linear(3)(x))
  with pytest.raises(ValueError, match='scalar'):
    f.init(jax.random.PRNGKey(0), jnp.ones(()))


@pytest.mark.parametrize('shape', [(5,), (4, 3), (2, 3, 4)])
def test_broadcast_batch_values_and_gradient(shape):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  weights = jax.random.normal(jax.random.PRNGKey(1), (6,) + shape)
  out = layers.broadcast_batch(x, 6)
  np.testing.assert_array_equal(out, jnp.broadcast_to(x, (6,) + shape))
  loss = lambda f: lambda x: jnp.sum(f(x) * weights)  # pylint: disable=g-long-lambda
  ours = jax.grad(loss(lambda x: layers.broadcast_batch(x, 6)))(x)
  reference = jax.grad(loss(lambda x: jnp.broadcast_to(x, (6,) + shape)))(x)
  np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ours, weights.sum(0), rtol=1e-6, atol=1e-6)
