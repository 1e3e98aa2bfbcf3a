"""Tests for kernels/cpu_gemm.py: OpenBLAS products against jnp.einsum."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_agents.kernels import cpu_gemm


def _arrays(*shapes, seed=0):
  rng = np.random.RandomState(seed)
  return [jnp.asarray(rng.randn(*s).astype(np.float32)) for s in shapes]


# The attention products in both layouts, a weight gradient (zero batch letters, columns
# split over threads, N not a multiple of the block), an output stored transposed, and
# one batch letter.
CASES = [
    ('bhqd,bhkd->bhqk', (2, 3, 5, 4), (2, 3, 7, 4)),
    ('bhqk,bhkd->bhqd', (2, 3, 5, 7), (2, 3, 7, 4)),
    ('bhqk,bhqd->bhkd', (2, 3, 5, 7), (2, 3, 5, 4)),
    ('bqhd,bkhd->bhqk', (2, 5, 3, 4), (2, 7, 3, 4)),
    ('bhqk,bkhd->bqhd', (2, 3, 5, 7), (2, 7, 3, 4)),
    ('bhqk,bqhd->bkhd', (2, 3, 5, 7), (2, 5, 3, 4)),
    ('rk,rn->kn', (9, 6), (9, 130)),
    ('rk,rn->nk', (9, 6), (9, 130)),
    ('bqk,bkd->bqd', (2, 5, 7), (2, 7, 200)),
]


def test_kernel_builds_here():
  # The suite runs on CPU with a compiler: the fast path must be the one tested below.
  assert jax.default_backend() == 'cpu'
  assert cpu_gemm.enabled()


@pytest.mark.parametrize('subscripts,x_shape,y_shape', CASES)
def test_einsum_matches_jnp(subscripts, x_shape, y_shape):
  x, y = _arrays(x_shape, y_shape)
  assert cpu_gemm._gemm_dims(subscripts, x, y) is not None  # the kernel takes it
  got = jax.jit(lambda x, y: cpu_gemm.einsum(subscripts, x, y))(x, y)
  np.testing.assert_allclose(got, jnp.einsum(subscripts, x, y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('subscripts,x_shape,y_shape', CASES[:6])
def test_fast_backward_gradients_match_jnp(subscripts, x_shape, y_shape):
  x, y = _arrays(x_shape, y_shape, seed=1)

  def loss(fn):
    return lambda x, y: jnp.sum(jnp.sin(fn(subscripts, x, y)))

  got = jax.jit(jax.grad(loss(cpu_gemm.einsum_fast_backward), (0, 1)))(x, y)
  want = jax.grad(loss(jnp.einsum), (0, 1))(x, y)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(cpu_gemm.einsum_fast_backward(subscripts, x, y),
                                jnp.einsum(subscripts, x, y))  # forward is XLA's


def test_vmap_runs_each_product():
  x, y = _arrays((4, 2, 5, 3, 4), (4, 2, 7, 3, 4))
  got = jax.vmap(lambda x, y: cpu_gemm.einsum('bqhd,bkhd->bhqk', x, y))(x, y)
  np.testing.assert_allclose(got, jnp.einsum('zbqhd,zbkhd->zbhqk', x, y),
                             rtol=1e-5, atol=1e-5)


def test_falls_back_to_xla():
  x, y = _arrays((2, 1, 4), (2, 4, 3))  # a size-1 matrix dimension
  assert cpu_gemm._gemm_dims('bqk,bkd->bqd', x, y) is None
  np.testing.assert_allclose(cpu_gemm.einsum('bqk,bkd->bqd', x, y),
                             jnp.einsum('bqk,bkd->bqd', x, y), rtol=1e-6)
  # bfloat16 operands: XLA's product, accumulated and returned in float32.
  xb, yb = x.astype(jnp.bfloat16), y.astype(jnp.bfloat16)
  got = cpu_gemm.einsum('bqk,bkd->bqd', xb, yb)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, jnp.einsum('bqk,bkd->bqd', xb, yb,
                                             preferred_element_type=jnp.float32),
                             rtol=1e-6)
  assert cpu_gemm.accumulation_dtype(xb, yb) == jnp.float32
  assert cpu_gemm.accumulation_dtype(x, y) == jnp.float32


def test_switched_off_by_environment(monkeypatch):
  monkeypatch.setenv('PERCEIVER_AGENTS_CPU_GEMM', '0')
  assert not cpu_gemm.enabled()
  x, y = _arrays((2, 3, 5, 4), (2, 3, 7, 4))
  hlo = jax.jit(lambda x, y: cpu_gemm.einsum('bhqd,bhkd->bhqk', x, y)).lower(x, y)
  assert 'pa_strided_gemm' not in hlo.as_text()


@pytest.mark.parametrize('subscripts', ['bqk,bkd', 'bqk,bkd->bq', 'bqkk,bkd->bqd',
                                        'hqd,bkhd->bhqk', 'abcqk,abckd->abcqd'])
def test_unsupported_subscripts_raise(subscripts):
  x, y = _arrays((2, 3, 4), (2, 4, 5))
  with pytest.raises(ValueError, match='subscripts|contracted'):
    cpu_gemm.einsum(subscripts, x, y)


def test_build_failure_warns_and_falls_back(monkeypatch, caplog):
  def fail():
    raise RuntimeError('no C++ compiler found ($CXX or c++)')

  monkeypatch.setattr(cpu_gemm, '_build', fail)
  cpu_gemm._library.cache_clear()
  try:
    assert not cpu_gemm.enabled()
    assert 'no C++ compiler' in caplog.text
    x, y = _arrays((2, 3, 5, 4), (2, 3, 7, 4))
    np.testing.assert_allclose(cpu_gemm.einsum('bhqd,bhkd->bhqk', x, y),
                               jnp.einsum('bhqd,bhkd->bhqk', x, y), rtol=1e-6)
  finally:
    cpu_gemm._library.cache_clear()


# Pieces of the bfloat16 kernel: slices of the outer batch index (even and uneven), of
# the inner one, single GEMMs with column blocks (N not a multiple of the block), and
# transposed or head-interleaved operands in each.
BF16_CASES = CASES + [
    ('bhqk,bhqd->bhkd', (3, 2, 33, 20), (3, 2, 33, 40)),
    ('bqhd,bkhd->bhqk', (1, 9, 4, 16), (1, 70, 4, 16)),
    ('rn,kn->rk', (50, 300), (70, 300)),
    ('rk,rn->kn', (300, 64), (300, 257)),
]


def _bfloat16_exact(subscripts, x, y):
  """The product of bfloat16 x and y accumulated in float32 (the kernel's contract)."""
  return jnp.einsum(subscripts, x.astype(jnp.float32), y.astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)


def test_bfloat16_kernel_builds_where_the_cpu_has_bfloat16_units():
  from perceiver_agents.kernels import cpu_features  # pylint: disable=g-import-not-at-top
  if not cpu_features.bf16_units():
    pytest.skip('no AVX-512 BF16 or AMX here')
  assert cpu_gemm.has_bfloat16_kernel()


@pytest.mark.skipif(not cpu_gemm.has_bfloat16_kernel(), reason='no oneDNN bfloat16 kernel')
@pytest.mark.parametrize('subscripts,x_shape,y_shape', BF16_CASES)
def test_bfloat16_einsum_accumulates_in_float32(subscripts, x_shape, y_shape):
  x, y = (a.astype(jnp.bfloat16) for a in _arrays(x_shape, y_shape, seed=2))
  fn = jax.jit(lambda x, y: cpu_gemm.einsum(subscripts, x, y))
  assert 'pa_strided_gemm_bf16' in fn.lower(x, y).as_text()
  got = fn(x, y)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, _bfloat16_exact(subscripts, x, y), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not cpu_gemm.has_bfloat16_kernel(), reason='no oneDNN bfloat16 kernel')
@pytest.mark.parametrize('subscripts,x_shape,y_shape', CASES[:6])
def test_bfloat16_fast_backward_gradients(subscripts, x_shape, y_shape):
  x, y = (a.astype(jnp.bfloat16) for a in _arrays(x_shape, y_shape, seed=3))
  g = _arrays(jnp.einsum(subscripts, x, y).shape, seed=4)[0].astype(jnp.bfloat16)
  out, vjp = jax.vjp(lambda x, y: cpu_gemm.einsum_fast_backward(subscripts, x, y), x, y)
  np.testing.assert_allclose(out, _bfloat16_exact(subscripts, x, y), rtol=1e-5, atol=1e-5)
  _, exact_vjp = jax.vjp(lambda x, y: _bfloat16_exact(subscripts, x, y), x, y)
  for got, want in zip(vjp(g.astype(jnp.float32)), exact_vjp(g.astype(jnp.float32))):
    assert got.dtype == jnp.bfloat16
    # The products are exact in float32; the cotangents are rounded to bfloat16 once.
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=1e-2, atol=1e-2 * float(jnp.max(jnp.abs(want))))


def test_builds_without_onednn_and_bfloat16_falls_back_to_xla(tmp_path):
  """Without the onednn-cpu-gomp packages the library holds the float32 kernel only,
  and bfloat16 products are XLA's (half_precision_einsum). In a fresh process: a
  process registers each FFI target once."""
  code = """if True:
    import jax, jax.numpy as jnp, numpy as np
    from perceiver_agents.kernels import cpu_gemm
    cpu_gemm._onednn = lambda: ('', '')
    assert cpu_gemm.enabled() and not cpu_gemm.has_bfloat16_kernel()
    x = jnp.asarray(np.random.RandomState(0).randn(2, 3, 5, 4), jnp.bfloat16)
    fn = jax.jit(lambda x: cpu_gemm.einsum('bhqd,bhkd->bhqk', x, x))
    assert 'pa_strided_gemm' not in fn.lower(x).as_text()
    exact = jnp.einsum('bhqd,bhkd->bhqk', x.astype(jnp.float32), x.astype(jnp.float32))
    np.testing.assert_allclose(fn(x), exact, rtol=1e-5, atol=1e-5)
    assert 'pa_strided_gemm' in jax.jit(lambda x: cpu_gemm.einsum(
        'bhqd,bhkd->bhqk', x, x)).lower(x.astype(jnp.float32)).as_text()
  """
  env = dict(os.environ, PERCEIVER_AGENTS_CACHE=str(tmp_path))
  result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                          text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]


def test_xla_only_context_restores_the_switch(monkeypatch):
  monkeypatch.delenv('PERCEIVER_AGENTS_CPU_GEMM', raising=False)
  x, y = _arrays((2, 3, 5, 4), (2, 3, 7, 4))
  lower = lambda: jax.jit(lambda x, y: cpu_gemm.einsum('bhqd,bhkd->bhqk', x, y)).lower(
      x, y).as_text()
  with cpu_gemm.xla_only():
    assert 'pa_strided_gemm' not in lower()
  assert 'pa_strided_gemm' in lower()


def test_several_devices_keep_xla():
  # The custom call has no sharding rule: with several devices XLA computes the products.
  code = ('import jax; from perceiver_agents.kernels import cpu_gemm; '
          'assert jax.device_count() == 2; assert not cpu_gemm.enabled(); print("ok")')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu')
  done = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                        text=True, check=False, timeout=120)
  assert done.returncode == 0 and 'ok' in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize('x_shape,y_shape,match', [
    ((2, 3, 5, 4), (2, 3, 7, 6), "index 'd' is 4 in x"),
    ((2, 3, 5), (2, 3, 7, 4), 'do not have ranks 4 and 4'),
])
def test_mismatched_operands_raise(x_shape, y_shape, match):
  x, y = _arrays(x_shape, y_shape)
  with pytest.raises(ValueError, match=match):
    cpu_gemm.einsum('bhqd,bhkd->bhqk', x, y)
