"""kernels.fusion: an exact identity whose backward keeps XLA from re-fusing residual chains."""
import re

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_agents import blocks
from perceiver_agents.kernels import fusion


@pytest.mark.parametrize('jit', [False, True])
def test_identity_forward_and_gradient(jit):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5))
  w = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 5))

  def loss(x, boundary):
    y = fusion.cotangent_boundary(x) if boundary else x
    return jnp.sum(jnp.tanh(y) * w)

  grad = jax.grad(loss)
  if jit:
    grad = jax.jit(grad, static_argnums=1)
  np.testing.assert_array_equal(fusion.cotangent_boundary(x), x)
  np.testing.assert_array_equal(grad(x, True), grad(x, False))


@pytest.mark.parametrize('shape', [(), (0, 4), (4,)])
def test_edge_shapes(shape):
  x = jnp.ones(shape)
  g = jax.grad(lambda x: jnp.sum(fusion.cotangent_boundary(x) * 2.0))(x)
  np.testing.assert_array_equal(g, 2.0 * np.ones(shape))


def _max_fusion_operands(depth: int) -> int:
  """Largest operand count of any fusion in the compiled gradient of a residual stack."""
  def forward(x):
    for _ in range(depth):
      x = blocks.SelfAttention(num_heads=2, widening_factor=1)(x, is_training=True)
    return jnp.sum(x ** 2)

  model = hk.without_apply_rng(hk.transform(forward))
  x = jnp.ones((2, 8, 16))
  params = model.init(jax.random.PRNGKey(0), x)
  hlo = jax.jit(jax.grad(model.apply)).lower(params, x).compile().as_text()
  counts = [len(re.findall(r'%[\w.\-]+', m.group(1)))
            for m in re.finditer(r'= \S+ fusion\((.*?)\), kind=', hlo)]
  return max(counts)


def test_backward_fusions_do_not_grow_with_depth():
  """Without the boundary, XLA:CPU fused the whole residual cotangent chain into each
  layer's weight-gradient copy: the operand count grew linearly with depth (and the work
  quadratically)."""
  shallow, deep = _max_fusion_operands(2), _max_fusion_operands(8)
  assert deep <= shallow + 4, (shallow, deep)
