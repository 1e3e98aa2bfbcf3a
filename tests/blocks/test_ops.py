"""blocks.ops: both kernel implementations give haiku's parameters, values and gradients."""
import os
import subprocess
import sys

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_agents import kernels
from perceiver_agents.blocks import ops


def _apply_both(fn, *args):
  """(params, {impl: (value, grads wrt params and args)}) of hk.transform(fn)."""
  model = hk.without_apply_rng(hk.transform(fn))
  params = model.init(jax.random.PRNGKey(0), *args)
  params = jax.tree.map(
      lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(7), p.shape), params)
  results = {}
  for impl in kernels.IMPLEMENTATIONS:
    with kernels.use(impl):
      value = model.apply(params, *args)
      weights = jax.random.normal(jax.random.PRNGKey(8), value.shape)
      loss = lambda p, *a: jnp.sum(jnp.sin(model.apply(p, *a)) * weights)  # pylint: disable=cell-var-from-loop
      grads = jax.jit(jax.grad(loss, argnums=tuple(range(len(args) + 1))))(params, *args)
    results[impl] = (value, grads)
  return params, results


def _assert_same(results):
  chex.assert_trees_all_close(results['fast'], results['reference'], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('shape', [(3, 5, 6), (4, 6)])
@pytest.mark.parametrize('layer', ['linear', 'layer_norm'])
def test_layers_equal_under_both_and_match_haiku(layer, shape):
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  ours = (lambda x: ops.Linear(4)(x)) if layer == 'linear' else ops.layer_norm
  theirs = ((lambda x: hk.Linear(4)(x)) if layer == 'linear' else
            (lambda x: hk.LayerNorm(axis=-1, create_scale=True, create_offset=True,
                                    eps=1e-5)(x)))
  params, results = _apply_both(ours, x)
  _assert_same(results)
  want = hk.without_apply_rng(hk.transform(theirs))
  chex.assert_trees_all_equal_structs(params, want.init(jax.random.PRNGKey(0), x))
  chex.assert_trees_all_close(results['fast'][0], want.apply(params, x),
                              rtol=1e-5, atol=1e-6)


def test_module_names_are_haiku_defaults():
  def f(x):
    return ops.layer_norm(ops.linear(3)(x))
  for impl in kernels.IMPLEMENTATIONS:
    with kernels.use(impl):
      params = hk.transform(f).init(jax.random.PRNGKey(0), jnp.ones((2, 4)))
    assert {k: sorted(v) for k, v in params.items()} == {
        'linear': ['b', 'w'], 'layer_norm': ['offset', 'scale']}


def test_scalar_input_is_refused():
  for impl in kernels.IMPLEMENTATIONS:
    with kernels.use(impl), pytest.raises(ValueError, match='scalar'):
      hk.transform(lambda x: ops.Linear(3)(x)).init(jax.random.PRNGKey(0), jnp.ones(()))


def test_products_boundary_broadcast_and_remat_equal_under_both():
  class Mlp(hk.Module):
    def __call__(self, x):
      return ops.linear(4)(jax.nn.gelu(ops.linear(8)(x)))

  def block(x):  # [B, N, C]
    mlp = Mlp()
    y = ops.remat(mlp, mlp)(ops.layer_norm(x))
    table = hk.get_parameter('table', [5, 4], init=hk.initializers.RandomNormal())
    y = y + ops.broadcast_batch(table, x.shape[0])
    logits = ops.einsum('bqc,bkc->bqk', y, x)
    return ops.residual_boundary(ops.einsum('bqk,bkc->bqc', jax.nn.softmax(logits), x))
  _, results = _apply_both(block, jax.random.normal(jax.random.PRNGKey(1), (2, 5, 4)))
  _assert_same(results)


def test_dropout_only_while_training():
  x = jnp.ones((4, 100))
  out = hk.transform(lambda x, t: ops.dropout(x, 0.5, is_training=t))
  np.testing.assert_array_equal(out.apply({}, None, x, False), x)
  dropped = out.apply({}, jax.random.PRNGKey(0), x, True)
  assert 0 < int(jnp.sum(dropped == 0)) < x.size
  no_rate = hk.transform(lambda x: ops.dropout(x, 0.0, is_training=True))
  np.testing.assert_array_equal(no_rate.apply({}, None, x), x)


def test_choice_context_env_and_errors():
  assert kernels.current() in kernels.IMPLEMENTATIONS
  with kernels.use('reference'):
    assert kernels.current() == 'reference'
    with kernels.use('fast'):
      assert kernels.current() == 'fast'
    assert kernels.current() == 'reference'
  with pytest.raises(ValueError, match='kernels'):
    with kernels.use('slow'):
      pass
  code = 'from perceiver_agents import kernels; print(kernels.current())'
  for value, want in (('reference', 'reference'), ('fast', 'fast')):
    env = dict(os.environ, PERCEIVER_AGENTS_KERNELS=value)
    got = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert got == want
  env = dict(os.environ, PERCEIVER_AGENTS_KERNELS='slow')
  result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                          text=True, check=False)
  assert result.returncode != 0 and 'PERCEIVER_AGENTS_KERNELS' in result.stderr


def test_gelu_is_the_tanh_approximation_and_exact_inside_exact_gelu():
  x = jnp.linspace(-4.0, 4.0, 101)
  np.testing.assert_array_equal(ops.gelu(x), jax.nn.gelu(x, approximate=True))
  with ops.exact_gelu():
    exact = ops.gelu(x)
    np.testing.assert_array_equal(exact, jax.nn.gelu(x, approximate=False))
  np.testing.assert_array_equal(ops.gelu(x), jax.nn.gelu(x, approximate=True))
  assert float(jnp.max(jnp.abs(exact - ops.gelu(x)))) > 1e-4


def test_gelu_of_bfloat16_is_float32_gelu_rounded_once():
  x = jnp.linspace(-4.0, 4.0, 1001).astype(jnp.bfloat16)
  got = jax.jit(ops.gelu)(x)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(
      got, jax.nn.gelu(x.astype(jnp.float32), approximate=True).astype(jnp.bfloat16))


@pytest.mark.parametrize('stride', [1, 2])
def test_conv1x1_is_hk_conv2d_in_both_implementations(stride):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6, 3))
  conv = lambda: ops.Conv1x1(4, stride=stride)
  reference = hk.without_apply_rng(hk.transform(
      lambda x: hk.Conv2D(4, kernel_shape=[1, 1], stride=[stride, stride])(x)))
  params = reference.init(jax.random.PRNGKey(1), x)
  want = reference.apply(params, x)
  for impl in kernels.IMPLEMENTATIONS:
    with kernels.use(impl):
      model = hk.without_apply_rng(hk.transform(lambda x: conv()(x)))
      chex.assert_trees_all_equal_shapes_and_dtypes(model.init(jax.random.PRNGKey(1), x),
                                                    params)
      chex.assert_trees_all_close(model.init(jax.random.PRNGKey(1), x), params)
      got = jax.jit(model.apply)(params, x)
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
      bf16 = jax.jit(model.apply)(jax.tree.map(lambda a: a.astype(jnp.bfloat16), params),
                                  x.astype(jnp.bfloat16))
      assert bf16.dtype == jnp.bfloat16
      np.testing.assert_allclose(np.asarray(bf16, np.float32), want, rtol=0.05, atol=0.05)
