"""kernels.layers: the hand-written backward passes equal JAX's autodiff of the plain maths."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_agents.kernels import layers


def _reference_layer_norm(x, scale, offset):
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + layers.LAYER_NORM_EPS) * scale + offset


def _check_values_and_gradients(variant, ours, reference, args):
  weights = jax.random.normal(jax.random.PRNGKey(9), ours(*args).shape)
  loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)) * weights)  # pylint: disable=g-long-lambda
  argnums = tuple(range(len(args)))
  chex.assert_trees_all_close(variant(ours)(*args), reference(*args), rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(variant(jax.grad(loss(ours), argnums))(*args),
                              jax.grad(loss(reference), argnums)(*args),
                              rtol=1e-4, atol=1e-5)


class KernelLayersTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_dense(self):
    for shape in [(3, 5, 6), (4, 6), (6,)]:
      x = jax.random.normal(jax.random.PRNGKey(1), shape)
      w = jax.random.normal(jax.random.PRNGKey(2), (6, 4))
      _check_values_and_gradients(self.variant, layers.dense, jnp.dot, (x, w))

  @chex.variants(with_jit=True, without_jit=True)
  def test_layer_norm(self):
    for shape in [(3, 5, 6), (4, 6), (6,)]:
      x = 2.0 + 3.0 * jax.random.normal(jax.random.PRNGKey(1), shape)
      scale = 1.0 + 0.3 * jax.random.normal(jax.random.PRNGKey(2), (6,))
      offset = 0.3 * jax.random.normal(jax.random.PRNGKey(3), (6,))
      _check_values_and_gradients(self.variant, layers.layer_norm,
                                  _reference_layer_norm, (x, scale, offset))

  @chex.variants(with_jit=True, without_jit=True)
  def test_broadcast_batch(self):
    for shape in [(5,), (4, 3), (2, 3, 4)]:
      x = jax.random.normal(jax.random.PRNGKey(0), shape)
      ours = lambda x: layers.broadcast_batch(x, 6)
      reference = lambda x: jnp.broadcast_to(x, (6,) + x.shape)
      np.testing.assert_array_equal(self.variant(ours)(x), reference(x))
      _check_values_and_gradients(self.variant, ours, reference, (x,))


@pytest.mark.parametrize('shape', [(5,), (2, 3, 4)])
def test_broadcast_batch_gradient_is_the_batch_sum(shape):
  weights = jax.random.normal(jax.random.PRNGKey(1), (6,) + shape)
  grad = jax.grad(lambda x: jnp.sum(layers.broadcast_batch(x, 6) * weights))(
      jnp.zeros(shape))
  chex.assert_trees_all_close(grad, weights.sum(0), rtol=1e-6, atol=1e-6)
