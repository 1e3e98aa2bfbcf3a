"""chex-verified tests of blocks/attention.py: attend, Attention, MLP, Self/CrossAttention.

Masks are checked against a plain-numpy masked multi-head attention; every block runs
with and without jit, and every parameter must receive a gradient.
"""
import pathlib
import sys

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import chex
from perceiver_agents.blocks import attention

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import helpers  # noqa: E402  (tests/helpers.py)

B, Q, K, C, H = 2, 3, 5, 8, 2


def np_attend(q, k, v, mask=None):
  """Reference masked multi-head attention in float64 numpy.

  q [B, Q, H, D], k [B, K, H, D], v [B, K, H, Dv], mask [B, Q, K] -> [B, Q, H*Dv];
  a query row whose keys are all masked gives zeros.
  """
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  logits = np.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  if mask is None:
    mask = np.ones((q.shape[0], q.shape[1], k.shape[1]), bool)
  mask = np.asarray(mask, bool)[:, None]  # [B, 1, Q, K]
  logits = np.where(mask, logits, -np.inf)
  row_max = np.max(logits, axis=-1, keepdims=True)
  row_max = np.where(np.isfinite(row_max), row_max, 0.0)
  e = np.where(mask, np.exp(logits - row_max), 0.0)
  denom = e.sum(-1, keepdims=True)
  weights = np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)
  out = np.einsum('bhqk,bkhd->bqhd', weights, v)
  return out.reshape(q.shape[0], q.shape[1], -1)


def np_attention_module(params, prefix, xq, xkv, heads, mask=None):
  """Reference for `Attention` using its parameters (q, k, v, output linears)."""
  def dense(name, x):
    p = params[f'{prefix}/{name}']
    return np.asarray(x, np.float64) @ np.asarray(p['w'], np.float64) + np.asarray(
        p['b'], np.float64)
  q, k, v = dense('linear', xq), dense('linear_1', xkv), dense('linear_2', xkv)
  split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, -1)
  return dense('linear_3', np_attend(split(q), split(k), split(v), mask))


def _mask_with_empty_rows(seed=0):
  """[B, Q, K] random mask where query row 1 of example 0 has no valid key."""
  mask = np.random.RandomState(seed).rand(B, Q, K) > 0.4
  mask[0, 1, :] = False
  mask[1, 0, :] = True
  return mask


class AttendTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('no_mask', False), ('mask', True))
  def test_matches_numpy_reference(self, use_mask):
    rng = np.random.RandomState(0)
    q = rng.randn(B, Q, H, 4).astype(np.float32)
    k = rng.randn(B, K, H, 4).astype(np.float32)
    v = rng.randn(B, K, H, 3).astype(np.float32)
    mask = _mask_with_empty_rows() if use_mask else None

    out = self.variant(
        lambda q, k, v, m: attention.attend(q, k, v, attention_mask=m))(
            q, k, v, mask)
    chex.assert_shape(out, (B, Q, H * 3))
    chex.assert_tree_all_finite(out)
    np.testing.assert_allclose(out, np_attend(q, k, v, mask), rtol=1e-5,
                               atol=1e-5)
    if use_mask:
      np.testing.assert_array_equal(np.asarray(out)[0, 1], 0.0)
      assert np.all(np.abs(np.asarray(out)[1, 0]) > 0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_every_key_masked_gives_exact_zeros_and_finite_gradients(self):
    rng = np.random.RandomState(1)
    q = rng.randn(B, Q, H, 4).astype(np.float32)
    k = rng.randn(B, K, H, 4).astype(np.float32)
    v = rng.randn(B, K, H, 4).astype(np.float32) + 10.0  # a uniform average != 0
    mask = np.zeros((B, Q, K), bool)

    f = self.variant(lambda q, k, v: attention.attend(q, k, v, attention_mask=mask))
    out = f(q, k, v)
    chex.assert_shape(out, (B, Q, H * 4))
    np.testing.assert_array_equal(out, 0.0)
    grads = jax.grad(lambda q, k, v: jnp.sum(f(q, k, v)), argnums=(0, 1, 2))(
        q, k, v)
    chex.assert_tree_all_finite(grads)

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_keys_do_not_influence_output(self):
    rng = np.random.RandomState(2)
    q = rng.randn(B, Q, H, 4).astype(np.float32)
    k = rng.randn(B, K, H, 4).astype(np.float32)
    v = rng.randn(B, K, H, 4).astype(np.float32)
    mask = np.ones((B, Q, K), bool)
    mask[:, :, -2:] = False  # the last two keys are invisible to every query
    k2, v2 = k.copy(), v.copy()
    k2[:, -2:] = 100 * rng.randn(B, 2, H, 4)
    v2[:, -2:] = 100 * rng.randn(B, 2, H, 4)

    f = self.variant(lambda q, k, v: attention.attend(q, k, v, attention_mask=mask))
    np.testing.assert_allclose(f(q, k, v), f(q, k2, v2), rtol=1e-6, atol=1e-6)
    assert not np.allclose(
        attention.attend(q, k, v), attention.attend(q, k2, v2))

  @chex.variants(with_jit=True, without_jit=True)
  def test_probability_dropout(self):
    rng = np.random.RandomState(3)
    q = rng.randn(B, Q, H, 4).astype(np.float32)
    k = rng.randn(B, K, H, 4).astype(np.float32)
    v = rng.randn(B, K, H, 4).astype(np.float32)
    mask = _mask_with_empty_rows()

    def make(rate):
      return hk.transform(lambda q, k, v: attention.attend(
          q, k, v, dropout_prob=rate, attention_mask=mask))

    key = jax.random.PRNGKey(0)
    with_dropout = self.variant(make(0.5).apply)
    out = with_dropout({}, key, q, k, v)
    out_other_key = with_dropout({}, jax.random.PRNGKey(1), q, k, v)
    no_dropout = self.variant(make(0.0).apply)({}, key, q, k, v)
    chex.assert_tree_all_finite((out, out_other_key))
    chex.assert_shape(out, (B, Q, H * 4))
    assert not np.allclose(out, no_dropout)
    assert not np.allclose(out, out_other_key)
    np.testing.assert_array_equal(np.asarray(out)[0, 1], 0.0)  # still empty
    np.testing.assert_allclose(no_dropout, np_attend(q, k, v, mask), rtol=1e-5,
                               atol=1e-5)


def test_make_cross_attention_mask_is_outer_and():
  rng = np.random.RandomState(0)
  query_mask = rng.rand(B, Q) > 0.5
  kv_mask = (rng.rand(B, K) > 0.5).astype(np.int32)  # truthy ints are accepted
  mask = attention.make_cross_attention_mask(jnp.asarray(query_mask),
                                             jnp.asarray(kv_mask))
  chex.assert_shape(mask, (B, Q, K))
  chex.assert_type(mask, bool)
  expected = np.einsum('bq,bk->bqk', query_mask.astype(int), kv_mask) > 0
  np.testing.assert_array_equal(mask, expected)
  assert expected.any() and not expected.all()


@pytest.mark.parametrize('bad, name', [
    ((np.ones((B, Q, 1)), np.ones((B, K))), 'query_mask'),
    ((np.ones((B, Q)), np.ones((K,))), 'kv_mask'),
    ((np.ones((B, Q)), np.ones((B + 1, K))), 'kv_mask batch'),
])
def test_make_cross_attention_mask_errors(bad, name):
  with pytest.raises(ValueError, match=name):
    attention.make_cross_attention_mask(*[jnp.asarray(x) for x in bad])


class AttentionModuleTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('no_mask', False), ('mask', True))
  def test_matches_numpy_with_its_params(self, use_mask):
    rng = np.random.RandomState(0)
    xq = rng.randn(B, Q, C).astype(np.float32)
    xkv = rng.randn(B, K, 6).astype(np.float32)
    mask = _mask_with_empty_rows() if use_mask else None
    t, params = helpers.init(lambda q, kv, m: attention.Attention(num_heads=H)(
        q, kv, attention_mask=m), xq, xkv, mask)

    out = self.variant(t.apply)(params, None, xq, xkv, mask)
    chex.assert_shape(out, (B, Q, C))
    chex.assert_tree_all_finite(out)
    expected = np_attention_module(params, 'attention', xq, xkv, H, mask)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    if use_mask:
      # An empty row is zero before the output projection: only its bias remains.
      np.testing.assert_allclose(np.asarray(out)[0, 1],
                                 params['attention/linear_3']['b'], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_channel_defaults_and_overrides(self):
    xq = jnp.ones((B, Q, C))
    xkv = jnp.ones((B, K, 6))
    t, params = helpers.init(lambda q, kv: attention.Attention(
        num_heads=H, qk_channels=4, v_channels=6, output_channels=10)(q, kv),
                      xq, xkv)
    chex.assert_shape([params['attention/linear']['w'],
                       params['attention/linear_1']['w'],
                       params['attention/linear_2']['w'],
                       params['attention/linear_3']['w']],
                      [(C, 4), (6, 4), (6, 6), (6, 10)])
    out = self.variant(t.apply)(params, None, xq, xkv)
    chex.assert_shape(out, (B, Q, 10))
    chex.assert_tree_all_finite(out)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradients_reach_every_parameter(self):
    rng = np.random.RandomState(1)
    xq = rng.randn(B, Q, C).astype(np.float32)
    xkv = rng.randn(B, K, C).astype(np.float32)
    mask = _mask_with_empty_rows()
    t, params = helpers.init(lambda q, kv: attention.Attention(num_heads=H)(
        q, kv, attention_mask=mask), xq, xkv)
    apply = self.variant(t.apply)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, xq, xkv)))(params)
    helpers.assert_every_leaf_has_gradient(grads)


class MLPTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_shape_gradients_and_dropout(self):
    x = np.random.RandomState(0).randn(B, Q, C).astype(np.float32)

    def fn(x, is_training):
      return attention.MLP(widening_factor=2, dropout_prob=0.5)(
          x, is_training=is_training)

    t, params = helpers.init(lambda x: fn(x, False), x)
    chex.assert_shape(params['mlp/linear']['w'], (C, 2 * C))
    apply = self.variant(t.apply)
    out = apply(params, None, x)
    chex.assert_shape(out, (B, Q, C))
    chex.assert_tree_all_finite(out)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, x)))(params)
    helpers.assert_every_leaf_has_gradient(grads)
    train = hk.transform(lambda x: fn(x, True)).apply(
        params, jax.random.PRNGKey(0), x)
    chex.assert_tree_all_finite(train)
    assert not np.allclose(train, out)


class SelfAttentionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('no_mask', False), ('mask', True))
  def test_shape_finite_and_gradients(self, use_mask):
    x = np.random.RandomState(0).randn(B, K, C).astype(np.float32)
    mask = (np.tril(np.ones((K, K), bool))[None].repeat(B, 0)
            if use_mask else None)
    t, params = helpers.init(lambda x: attention.SelfAttention(
        num_heads=H, widening_factor=2)(x, is_training=False,
                                        attention_mask=mask), x)
    apply = self.variant(t.apply)
    out = apply(params, None, x)
    chex.assert_shape(out, (B, K, C))
    chex.assert_tree_all_finite(out)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, x)))(params)
    helpers.assert_every_leaf_has_gradient(grads)
    if use_mask:  # causal: position 0 ignores every later position
      x2 = x.copy()
      x2[:, 1:] += 5.0
      out2 = apply(params, None, x2)
      np.testing.assert_allclose(np.asarray(out)[:, 0], np.asarray(out2)[:, 0],
                                 rtol=1e-5, atol=1e-5)
      assert not np.allclose(np.asarray(out)[:, 1:], np.asarray(out2)[:, 1:])

  @chex.variants(with_jit=True, without_jit=True)
  def test_attention_dropout_only_when_training(self):
    x = np.random.RandomState(0).randn(B, K, C).astype(np.float32)

    def fn(rate, is_training):
      return lambda x: attention.SelfAttention(
          num_heads=H, attention_dropout_prob=rate)(x, is_training=is_training)

    key = jax.random.PRNGKey(0)
    _, params = helpers.init(fn(0.5, True), x)
    train = self.variant(hk.transform(fn(0.5, True)).apply)(params, key, x)
    evaluate = hk.transform(fn(0.5, False)).apply(params, key, x)
    no_rate = hk.transform(fn(0.0, True)).apply(params, key, x)
    chex.assert_tree_all_finite(train)
    chex.assert_shape(train, (B, K, C))
    assert not np.allclose(train, evaluate)
    np.testing.assert_allclose(evaluate, no_rate, rtol=1e-6, atol=1e-6)


class CrossAttentionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('kv_residual', 'kv', True), ('q_no_residual', 'q', False))
  def test_shape_finite_and_gradients(self, shape_for_attn, residual):
    rng = np.random.RandomState(0)
    xq = rng.randn(B, Q, C).astype(np.float32)
    xkv = rng.randn(B, K, 12).astype(np.float32)
    mask = _mask_with_empty_rows()
    t, params = helpers.init(lambda q, kv: attention.CrossAttention(
        num_heads=H, shape_for_attn=shape_for_attn, use_query_residual=residual)(
            q, kv, is_training=False, attention_mask=mask), xq, xkv)
    qk = C if shape_for_attn == 'q' else 12
    chex.assert_shape(params['cross_attention/attention/linear']['w'], (C, qk))
    apply = self.variant(t.apply)
    out = apply(params, None, xq, xkv)
    chex.assert_shape(out, (B, Q, C))
    chex.assert_tree_all_finite(out)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, xq, xkv)))(params)
    helpers.assert_every_leaf_has_gradient(grads)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('residual', True), ('no_residual', False))
  def test_query_residual(self, residual):
    # Every path from the query starts with a LayerNorm, which is blind to a constant
    # shift of the channels; only the residual carries such a shift to the output.
    xq = helpers.rand(B, Q, C, seed=0)
    xkv = helpers.rand(B, K, C, seed=1)
    t, params = helpers.init(lambda q, kv: attention.CrossAttention(
        num_heads=H, use_query_residual=residual)(q, kv, is_training=False),
                             xq, xkv)
    apply = self.variant(t.apply)
    out = apply(params, None, xq, xkv)
    shifted = apply(params, None, xq + 3.0, xkv)
    other_query = apply(params, None, helpers.rand(B, Q, C, seed=2), xkv)
    chex.assert_tree_all_finite((out, shifted))
    np.testing.assert_allclose(shifted - out, 3.0 if residual else 0.0,
                               atol=1e-4)
    assert not np.allclose(out, other_query, atol=1e-3)

  @chex.variants(with_jit=True, without_jit=True)
  def test_attention_dropout_only_when_training(self):
    rng = np.random.RandomState(0)
    xq = rng.randn(B, Q, C).astype(np.float32)
    xkv = rng.randn(B, K, C).astype(np.float32)

    def fn(rate, is_training):
      return hk.transform(lambda q, kv: attention.CrossAttention(
          num_heads=H, attention_dropout_prob=rate)(q, kv, is_training=is_training))

    key = jax.random.PRNGKey(0)
    _, params = helpers.init(lambda q, kv: attention.CrossAttention(num_heads=H)(
        q, kv, is_training=False), xq, xkv)
    train = self.variant(fn(0.5, True).apply)(params, key, xq, xkv)
    evaluate = fn(0.5, False).apply(params, key, xq, xkv)
    no_rate = fn(0.0, True).apply(params, key, xq, xkv)
    chex.assert_tree_all_finite(train)
    assert not np.allclose(train, evaluate)
    np.testing.assert_allclose(evaluate, no_rate, rtol=1e-6, atol=1e-6)


def test_attention_rejects_bad_inputs():
  q3, kv3 = jnp.ones((B, Q, C)), jnp.ones((B, K, C))
  helpers.raises_on_init(lambda q, kv: attention.Attention(num_heads=H)(q, kv),
          jnp.ones((C,)), kv3, match=r'inputs_q must be \[B, Q, C\] or \[Q, C\]')
  helpers.raises_on_init(lambda q, kv: attention.Attention(num_heads=H)(q, kv),
          q3, jnp.ones((K, C)), match='inputs_kv must have rank 3')
  helpers.raises_on_init(lambda q, kv: attention.Attention(num_heads=H)(q, kv),
          q3, jnp.ones((B + 1, K, C)), match='inputs_kv batch')
  helpers.raises_on_init(lambda q, kv: attention.Attention(num_heads=H)(
      q, kv, attention_mask=jnp.ones((B, K, Q), bool)), q3, kv3,
          match='attention_mask must have shape')
  helpers.raises_on_init(lambda q, kv: attention.Attention(num_heads=3)(q, kv), q3, kv3,
          match=r'qk_channels \(8\) must be divisible by num_heads \(3\)')
  helpers.raises_on_init(lambda q, kv: attention.Attention(num_heads=H, v_channels=5)(q, kv),
          q3, kv3, match=r'v_channels \(5\) must be divisible')
  helpers.raises_on_init(lambda q, kv: attention.Attention(num_heads=0)(q, kv), q3, kv3,
          match='num_heads must be positive')


def test_self_and_cross_attention_reject_bad_inputs():
  x = jnp.ones((B, K, C))
  helpers.raises_on_init(lambda x: attention.SelfAttention(num_heads=3)(x, is_training=False),
          x, match=r'inputs channels \(8\) must be divisible by num_heads')
  helpers.raises_on_init(lambda x: attention.SelfAttention(num_heads=H, qk_channels=5)(
      x, is_training=False), x, match=r'qk_channels \(5\)')
  helpers.raises_on_init(lambda x: attention.SelfAttention(num_heads=H)(x, is_training=False),
          jnp.ones((K, C)), match='inputs must have rank 3')
  helpers.raises_on_init(lambda x: attention.SelfAttention(num_heads=H)(
      x, is_training=False, attention_mask=jnp.ones((B, K, K + 1), bool)), x,
          match='attention_mask')
  helpers.raises_on_init(lambda q, kv: attention.CrossAttention(num_heads=3)(
      q, kv, is_training=False), x, jnp.ones((B, K, C)),
          match=r'inputs_kv channels \(8\) must be divisible')
  helpers.raises_on_init(lambda q, kv: attention.CrossAttention(num_heads=3, shape_for_attn='q')(
      q, kv, is_training=False), x, jnp.ones((B, K, 6)),
          match=r'inputs_q channels \(8\) must be divisible')
  helpers.raises_on_init(lambda q, kv: attention.CrossAttention(num_heads=H)(
      q, kv, is_training=False), jnp.ones((C,)), x, match='inputs_q')
  with pytest.raises(ValueError, match='shape_for_attn'):
    hk.transform(lambda: attention.CrossAttention(shape_for_attn='x')).init(None)


def _qkv(qk_dim=8, v_dim=8, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  return (jax.random.normal(keys[0], (2, 5, 2, qk_dim)),
          jax.random.normal(keys[1], (2, 7, 2, qk_dim)),
          jax.random.normal(keys[2], (2, 7, 2, v_dim)))


def test_dot_product_attention_path_matches_xla_path_with_empty_rows():
  q, k, v = _qkv()
  mask = np.random.RandomState(0).rand(2, 5, 7) > 0.4
  mask[0, 1, :] = False  # a query row with no visible key
  mask = jnp.asarray(mask)
  cotangent = jax.random.normal(jax.random.PRNGKey(3), (2, 5, 16))

  def loss(q, k, v, implementation):
    out = attention.attend(q, k, v, attention_mask=mask,
                           implementation=implementation)
    return jnp.sum(out * cotangent), out

  results = {}
  for impl in ('xla', 'dot_product_attention'):
    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
        q, k, v, impl)
    results[impl] = (out, grads)
    np.testing.assert_array_equal(out[0, 1], np.zeros(16))
    assert all(np.isfinite(g).all() for g in grads)
  np.testing.assert_allclose(results['dot_product_attention'][0],
                             results['xla'][0], atol=1e-5)
  for a, b in zip(results['dot_product_attention'][1], results['xla'][1]):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_auto_is_xla_and_bad_implementations_are_refused():
  q, k, v = _qkv(qk_dim=8, v_dim=4)
  np.testing.assert_array_equal(attention.attend(q, k, v),
                                attention.attend(q, k, v, implementation='xla'))
  with pytest.raises(ValueError, match='value head widths'):
    attention.attend(q, k, v, implementation='dot_product_attention')
  with pytest.raises(ValueError, match='implementation'):
    attention.attend(q, k, v, implementation='flash')


class _FakeFused:
  """Stands in for jax.nn.dot_product_attention: records each call's implementation,
  then computes with JAX's XLA implementation or raises `error` (as JAX's own checks
  do when cuDNN cannot take a call)."""

  def __init__(self, error=None):
    self.calls, self.error = [], error
    self.real = jax.nn.dot_product_attention

  def __call__(self, q, k, v, mask=None, implementation=None):
    self.calls.append(implementation)
    if self.error:
      raise self.error
    return self.real(q, k, v, mask=mask, implementation='xla')


@pytest.mark.parametrize('backend, dtype, qk_dim, dropout, error, expect_calls', [
    ('gpu', jnp.bfloat16, 8, 0.0, None, ['cudnn']),  # cuDNN's case: taken.
    ('gpu', jnp.float16, 8, 0.0, None, ['cudnn']),
    ('gpu', jnp.bfloat16, 8, 0.0, NotImplementedError('head dim'), ['cudnn']),  # Refused.
    ('gpu', jnp.bfloat16, 8, 0.0, RuntimeError('cuDNN < 8.9'), ['cudnn']),
    ('gpu', jnp.float32, 8, 0.0, None, []),  # float32: XLA's path was faster.
    ('gpu', jnp.bfloat16, 16, 0.0, None, []),  # Dqk != Dv.
    ('gpu', jnp.bfloat16, 8, 0.5, None, []),  # dropout.
    ('cpu', jnp.bfloat16, 8, 0.0, None, []),
])
def test_auto_picks_cudnn_on_a_gpu_in_half_precision(monkeypatch, backend, dtype,
                                                     qk_dim, dropout, error,
                                                     expect_calls):
  q, k, v = (x.astype(dtype) for x in _qkv(qk_dim=qk_dim, v_dim=8))
  mask = np.random.RandomState(0).rand(2, 5, 7) > 0.4
  mask[0, 1, :] = False  # a query row with no visible key
  mask = jnp.asarray(mask)
  fake = _FakeFused(error)
  monkeypatch.setattr(jax.nn, 'dot_product_attention', fake)
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  rng = hk.PRNGSequence(0)
  out = hk.transform(lambda: attention.attend(
      q, k, v, attention_mask=mask, dropout_prob=dropout)).apply({}, next(rng))
  assert fake.calls == expect_calls
  chex.assert_shape(out, (2, 5, 16))
  np.testing.assert_array_equal(np.asarray(out[0, 1], np.float32), np.zeros(16))
  if dropout == 0:  # Whichever path ran, the same function (to half precision).
    reference = attention.attend(q, k, v, attention_mask=mask, implementation='xla')
    np.testing.assert_allclose(np.asarray(out, np.float32),
                               np.asarray(reference, np.float32), atol=2e-2)


@pytest.mark.parametrize('residual', [True, False])
def test_shared_queries_match_the_same_queries_repeated(residual):
  """Queries [Q, C] shared by the batch: the values and gradients of [B, Q, C] copies."""
  def fn(q, kv):
    return attention.CrossAttention(num_heads=H, use_query_residual=residual)(
        q, kv, is_training=False)
  t = hk.transform(fn)
  q, kv = helpers.rand(Q, C), helpers.rand(B, K, C, seed=1)
  repeated = jnp.broadcast_to(q, (B, Q, C))
  params = t.init(jax.random.PRNGKey(0), q, kv)
  shared_out = t.apply(params, None, q, kv)
  chex.assert_shape(shared_out, (B, Q, C))
  np.testing.assert_allclose(shared_out, t.apply(params, None, repeated, kv),
                             rtol=1e-5, atol=1e-6)
  loss = lambda p, q: helpers.random_loss(t.apply(p, None, q, kv))
  shared_grads = jax.grad(loss, argnums=(0, 1))(params, q)
  repeated_grads = jax.grad(lambda p, q: loss(p, jnp.broadcast_to(q, (B, Q, C))),
                            argnums=(0, 1))(params, q)
  chex.assert_trees_all_close(shared_grads, repeated_grads, rtol=1e-4, atol=1e-5)
