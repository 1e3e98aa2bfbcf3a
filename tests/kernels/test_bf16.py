"""bfloat16 compute behind blocks/ops.py ('fast'): every product takes bfloat16 operands
and accumulates in float32, and the gradients match float32 within bfloat16 tolerance."""
import re

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_agents import blocks
from perceiver_agents.blocks import ops
from perceiver_agents import kernels
from perceiver_agents.encoders import outputs
from perceiver_agents.kernels import cpu_gemm
from perceiver_agents.kernels import layers as kernel_layers
from perceiver_agents.learner import update

B, N, M, C = 2, 16, 8, 32


def _model():
  def forward(x):  # [B, N, C] -> [B, M, C]
    encoder = blocks.PerceiverEncoder(
        num_self_attends_per_block=2, num_blocks=1, z_index_dim=M, num_z_channels=C,
        num_self_attend_heads=2, num_cross_attend_heads=1)
    return encoder(x, encoder.latents(x), is_training=False)
  return hk.without_apply_rng(hk.transform(forward))


def _loss(model, dtype, weights):
  def loss(params, x):
    out = model.apply(update.cast_floating(params, dtype), x.astype(dtype))
    return jnp.sum(out.astype(jnp.float32) * weights)
  return loss


def _setup():
  model = _model()
  x = jax.random.normal(jax.random.PRNGKey(0), (B, N, C))
  params = model.init(jax.random.PRNGKey(1), x)
  weights = jax.random.normal(jax.random.PRNGKey(2), (B, M, C))
  return model, params, x, weights


def test_every_product_accumulates_in_float32():
  model, params, x, weights = _setup()
  with kernels.use('fast'):
    grad = jax.jit(jax.grad(_loss(model, jnp.bfloat16, weights)))
    hlo = grad.lower(params, x).as_text()  # StableHLO of forward and backward
  # XLA's dots and the oneDNN kernel's calls (cpu_gemm.in_place_products).
  products = re.findall(r'(?:stablehlo\.dot_general|stablehlo\.custom_call '
                        r'@pa_strided_gemm_bf16).*?: \((.*?)\) -> (tensor<[^>]*>)', hlo)
  # Dense layers through the kernel: bfloat16 operands and bias, the float32
  # accumulation rounded inside oneDNN (bfloat16 or float32 output).
  dense = re.findall(r'stablehlo\.custom_call @pa_dense_bf16.*?: \((.*?)\) -> ', hlo)
  assert all('f32' not in operands for operands in dense), dense
  bf16_products = [(operands, result) for operands, result in products if 'bf16' in operands]
  # Dense layers, QK^T, PV and the backward products of each.
  assert len(bf16_products) + len(dense) >= 20, (len(bf16_products), len(dense))
  for operands, result in bf16_products:
    assert result.endswith('xf32>'), (operands, result)
    assert 'f32' not in operands, operands  # both operands bfloat16
  assert all('bf16' in operands for operands, _ in products), 'a float32 product remained'


def test_bfloat16_gradients_match_float32():
  model, params, x, weights = _setup()
  with kernels.use('fast'):
    g32 = jax.jit(jax.grad(_loss(model, jnp.float32, weights)))(params, x)
    g16 = jax.jit(jax.grad(_loss(model, jnp.bfloat16, weights)))(params, x)
  chex.assert_trees_all_equal_dtypes(g16, g32)  # float32 master gradients
  # bfloat16 has an 8-bit mantissa (~0.4% per rounding). Each leaf within 5% of its
  # norm, or of the largest leaf's (some are zero up to rounding: a key bias, which the
  # softmax ignores).
  largest = max(float(jnp.linalg.norm(a)) for a in jax.tree.leaves(g32))
  for path, a in jax.tree_util.tree_leaves_with_path(g32):
    b = dict(jax.tree_util.tree_leaves_with_path(g16))[path]
    error = float(jnp.linalg.norm(b - a))
    assert error < 0.05 * max(float(jnp.linalg.norm(a)), 0.01 * largest), (
        jax.tree_util.keystr(path), error, float(jnp.linalg.norm(a)))


def test_reference_and_fast_agree_in_bfloat16():
  model, params, x, _ = _setup()
  outs = {}
  for impl in kernels.IMPLEMENTATIONS:
    with kernels.use(impl):
      outs[impl] = jax.jit(lambda p, x: model.apply(
          update.cast_floating(p, jnp.bfloat16), x.astype(jnp.bfloat16)))(params, x)
  chex.assert_trees_all_equal_dtypes(outs['fast'], outs['reference'])
  a, b = (np.asarray(outs[k], np.float32) for k in ('reference', 'fast'))
  assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.03


def _compiled_products(fn, *args):
  """[(lhs dtype, rhs dtype, result dtype)] of every dot XLA compiled for fn(*args), and
  of every call to the oneDNN kernel (kind 'dot' or 'onednn' first)."""
  text = jax.jit(fn).lower(*args).compile().as_text()
  types = dict(re.findall(r'%([\w.\-]+) = (\w+)\[', text))
  found = re.findall(r'= (\w+)\[[^\n]* (dot|custom-call)\(%([\w.\-]+), %([\w.\-]+)\)'
                     r'(?:, custom_call_target="(\w+)")?', text)
  return [('dot' if op == 'dot' else 'onednn', types[lhs], types[rhs], result)
          for result, op, lhs, rhs, target in found
          if op == 'dot' or target in ('pa_strided_gemm_bf16', 'pa_dense_bf16')]


BF16_PRODUCTS = (('dot', 'bf16', 'bf16', 'f32'), ('onednn', 'bf16', 'bf16', 'f32'))

# The backward products: weight gradient X^T G, attention's dV = P^T dO, dK = dS^T Q,
# dQ = dS K and dP = dO V^T.
BACKWARD_PRODUCTS = [('rk,rn->kn', (64, 16), (64, 24)),
                     ('bhqk,bhqd->bhkd', (2, 2, 16, 12), (2, 2, 16, 8)),
                     ('bhqd,bhqk->bhkd', (2, 2, 16, 8), (2, 2, 16, 12)),
                     ('bhqk,bhkd->bhqd', (2, 2, 16, 12), (2, 2, 12, 8)),
                     ('bhqd,bhkd->bhqk', (2, 2, 16, 8), (2, 2, 12, 8))]


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason="XLA:CPU's bfloat16 dot path")
@pytest.mark.parametrize('subscripts,x_shape,y_shape', BACKWARD_PRODUCTS)
def test_xla_backward_products_compile_to_bfloat16_dots(subscripts, x_shape, y_shape):
  """Without the oneDNN kernel, half_precision_einsum lays the operands out so that
  XLA keeps each product in bfloat16."""
  x = jax.random.normal(jax.random.PRNGKey(0), x_shape)
  y = jax.random.normal(jax.random.PRNGKey(1), y_shape)
  fn = lambda a, b: cpu_gemm.half_precision_einsum(subscripts, a, b)
  dots = _compiled_products(fn, x.astype(jnp.bfloat16), y.astype(jnp.bfloat16))
  # XLA:CPU converts a bfloat16 operand whose contracted index is not last on the left
  # (or is a transpose folded into the dot) to float32 and multiplies in float32.
  assert dots and all(d == BF16_PRODUCTS[0] for d in dots), dots
  out = fn(x.astype(jnp.bfloat16), y.astype(jnp.bfloat16))
  assert out.dtype == jnp.float32
  exact = jnp.einsum(subscripts, x.astype(jnp.bfloat16).astype(jnp.float32),
                     y.astype(jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_allclose(out, exact, rtol=1e-5, atol=1e-5)  # f32 accumulation


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason="XLA:CPU's bfloat16 dot path")
def test_dense_gradients_are_bfloat16_products():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 24)).astype(jnp.bfloat16)
  w = jax.random.normal(jax.random.PRNGKey(1), (24, 32)).astype(jnp.bfloat16)
  loss = lambda x, w: jnp.sum(kernel_layers.dense(x, w).astype(jnp.float32) ** 2)
  products = _compiled_products(jax.grad(loss, argnums=(0, 1)), x, w)
  assert len(products) == 3, products  # forward, dX = G W^T, dW = X^T G
  assert all(p in BF16_PRODUCTS for p in products), products


@pytest.mark.skipif(not cpu_gemm.has_bfloat16_kernel(), reason='no oneDNN bfloat16 kernel')
@pytest.mark.parametrize('out_dtype', [jnp.bfloat16, jnp.float32])
def test_dense_bias_kernel_matches_dense_plus_bias(out_dtype):
  """One oneDNN product with the bias and the rounding inside: the float32 sum of
  products and bias, rounded once; gradients as dense's and the bias's."""
  x, w, b = (jax.random.normal(jax.random.PRNGKey(i), s).astype(jnp.bfloat16)
             for i, s in enumerate([(3, 70, 24), (24, 130), (130,)]))
  exact = lambda x, w, b: (jnp.dot(x.astype(jnp.float32), w.astype(jnp.float32),
                                   precision='highest') + b.astype(jnp.float32))
  got = jax.jit(lambda x, w, b: kernel_layers.dense_bias_bfloat16(x, w, b, out_dtype))
  out = got(x, w, b)
  assert out.dtype == out_dtype
  np.testing.assert_allclose(np.asarray(out, np.float32),
                             np.asarray(exact(x, w, b).astype(out_dtype), np.float32),
                             rtol=1e-2 if out_dtype == jnp.bfloat16 else 1e-5, atol=1e-4)
  g = jax.random.normal(jax.random.PRNGKey(5), out.shape)
  loss = lambda fn: lambda x, w, b: jnp.sum(fn(x, w, b).astype(jnp.float32) * g)
  grads = jax.grad(loss(lambda x, w, b: kernel_layers.dense_bias_bfloat16(
      x, w, b, out_dtype)), argnums=(0, 1, 2))(x, w, b)
  want = jax.grad(loss(exact), argnums=(0, 1, 2))(x, w, b)
  for a, e in zip(grads, want):
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(e, np.float32),
                               rtol=2e-2, atol=2e-2 * float(jnp.max(jnp.abs(e))))


@pytest.mark.skipif(not cpu_gemm.has_bfloat16_kernel(), reason='no oneDNN bfloat16 kernel')
def test_reused_pieces_read_each_calls_buffers():
  """Each thread keeps a piece's oneDNN memory objects and points them at every call's
  buffers: calls of the same shapes, with other shapes in between, read their own."""
  dense = jax.jit(lambda x, w, b: kernel_layers.dense_bias_bfloat16(x, w, b, jnp.float32))
  strided = jax.jit(lambda x, y: cpu_gemm.einsum('bqhd,bkhd->bhqk', x, y))
  for seed in range(4):
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    rows = 130 + 70 * (seed % 2)  # two row counts: two sets of pieces, interleaved
    x, w, b = (jax.random.normal(k, s).astype(jnp.bfloat16) for k, s in zip(
        keys, [(rows, 24), (24, 40), (40,)]))
    q, k = (jax.random.normal(key, (2, 9, 3, 8)).astype(jnp.bfloat16) for key in keys[3:])
    f32 = lambda a: a.astype(jnp.float32)
    np.testing.assert_allclose(dense(x, w, b), f32(x) @ f32(w) + f32(b), rtol=1e-5,
                               atol=1e-4)
    np.testing.assert_allclose(strided(q, k), jnp.einsum('bqhd,bkhd->bhqk', f32(q), f32(k)),
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('impl', kernels.IMPLEMENTATIONS)
def test_last_projections_return_float32_for_bfloat16_inputs(impl):
  """The decoders' output layer and the tied embedding decoder hand the loss float32
  ('fast': their float32 accumulation, not logits rounded to bfloat16)."""
  def forward(x):  # [B, N, C] -> ([B, N, 5], [B, N, 5], [B, N, 7])
    embedding = jax.random.normal(jax.random.PRNGKey(3), (7, C)).astype(x.dtype)
    return (ops.Linear(5, float32_output=True)(x), ops.Linear(5)(x),
            outputs.EmbeddingDecoder(embedding_matrix=embedding)(x))
  model = hk.without_apply_rng(hk.transform(forward))
  x = jax.random.normal(jax.random.PRNGKey(0), (B, N, C))
  params = model.init(jax.random.PRNGKey(1), x)
  with kernels.use(impl):
    last, hidden, logits = jax.jit(model.apply)(update.cast_floating(params, jnp.bfloat16),
                                                x.astype(jnp.bfloat16))
    last32, _, logits32 = jax.jit(model.apply)(params, x)
  assert (last.dtype, hidden.dtype, logits.dtype) == (jnp.float32, jnp.bfloat16, jnp.float32)
  assert last32.dtype == logits32.dtype == jnp.float32
  if impl == 'fast':  # reference: hk.Linear's bfloat16 output, cast
    # Not rounded to bfloat16: most values are not representable in it.
    assert np.mean(np.asarray(last) != np.asarray(last.astype(jnp.bfloat16), np.float32)) > 0.5


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason="XLA:CPU's bfloat16 dot path")
@pytest.mark.parametrize('in_place', [True, False])
def test_attention_products_are_bfloat16_products(in_place, monkeypatch):
  """QK^T and PV, forward and backward, of operands in [B, N, H, D]: read in place by
  the oneDNN kernel, or heads-major copies XLA keeps in bfloat16 (where it would
  otherwise run float32 dots)."""
  if in_place and not cpu_gemm.has_bfloat16_kernel():
    pytest.skip('no oneDNN bfloat16 kernel here')
  if not in_place:
    monkeypatch.setattr(cpu_gemm, 'has_bfloat16_kernel', lambda: False)
  q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, n, 2, 16)).astype(jnp.bfloat16)
             for i, n in enumerate((16, 24, 24)))

  def loss(q, k, v):
    return jnp.sum(blocks.attention.attend(q, k, v).astype(jnp.float32) ** 2)

  with kernels.use('fast'):
    forward = _compiled_products(lambda q, k, v: blocks.attention.attend(q, k, v), q, k, v)
    backward = _compiled_products(jax.grad(loss, argnums=(0, 1, 2)), q, k, v)
  assert len(forward) == 2 and len(backward) == 6, (forward, backward)
  kind = BF16_PRODUCTS[1] if in_place else BF16_PRODUCTS[0]
  assert all(p == kind for p in forward + backward), (forward, backward)
