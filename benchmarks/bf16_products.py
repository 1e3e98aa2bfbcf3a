"""bfloat16 products with float32 accumulation on CPU, side by side: XLA's own dot, XLA's
dot with the operands laid out as it needs (`half_precision_einsum`), the oneDNN kernel
of kernels/cpu_gemm.py, MKL's `cblas_gemm_bf16bf16f32`, and float32 XLA / OpenBLAS for
scale.

    .venv/bin/python benchmarks/bf16_products.py [--repeats 20] [--mkl_lib DIR]

The shapes are language_small's backward products (benchmarks/cpu_gemm.py's list),
attention's forward products on [B, N, H, D] operands (read in place by the oneDNN
kernel) and a 2048^3 matmul. XLA's bf16 x bf16 -> f32 dot is `jnp.einsum(...,
preferred_element_type=jnp.float32)` as written; `half_precision_einsum` transposes an
operand in bfloat16 where XLA would otherwise convert it to float32 (what the 'fast'
kernels run without oneDNN); the oneDNN column is `cpu_gemm.einsum` on bfloat16 operands
(what they run with it). MKL is called through ctypes on host arrays (no XLA dispatch),
one matrix per call, batched products as a loop over the batch, with its own threads:
the MKL column is what an FFI kernel around it could reach at best. --mkl_lib is the
folder holding libmkl_rt.so.* (e.g. the `mkl` wheel's data/lib, with intel-openmp's
libiomp5.so next to it or in --iomp_lib); without it the MKL column is skipped.
"""
import argparse
import ctypes
import glob
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

import cpu_gemm as cpu_gemm_bench  # pylint: disable=g-import-not-at-top
from perceiver_agents.kernels import cpu_features  # pylint: disable=g-import-not-at-top
from perceiver_agents.kernels import cpu_gemm  # pylint: disable=g-import-not-at-top
from perceiver_agents.kernels import host_memory  # pylint: disable=g-import-not-at-top

PRODUCTS = [('matmul 2048^3', 'mk,kn->mn', (2048, 2048), (2048, 2048))] + list(
    cpu_gemm_bench.PRODUCTS) + [
        ('cross-attention QK^T, in place', 'bqhd,bkhd->bhqk', (8, 128, 8, 32), (8, 512, 8, 32)),
        ('cross-attention PV, in place', 'bhqk,bkhd->bqhd', (8, 8, 128, 512), (8, 512, 8, 64)),
        ('self-attention QK^T, in place', 'bqhd,bkhd->bhqk', (8, 128, 8, 32), (8, 128, 8, 32)),
    ]
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def _median(fn, repeats):
  fn()
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def load_mkl(lib_dir, iomp_dir):
  for path in glob.glob(os.path.join(iomp_dir or lib_dir, 'libiomp5.so')):
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
  mkl = ctypes.CDLL(sorted(glob.glob(os.path.join(lib_dir, 'libmkl_rt.so*')))[0])
  mkl.cblas_gemm_bf16bf16f32.restype = None
  mkl.cblas_gemm_bf16bf16f32.argtypes = (
      [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                            ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_int])
  mkl.MKL_Set_Num_Threads.argtypes = [ctypes.c_int]
  mkl.MKL_Set_Num_Threads(os.cpu_count())
  return mkl


def mkl_product(mkl, subscripts, x, y):
  """A zero-argument call computing the product with MKL (bf16 in, f32 out)."""
  xs, ys, out, batch, k, m, n = cpu_gemm._parse(subscripts)  # pylint: disable=protected-access
  size = dict(zip(xs, x.shape))
  size.update(zip(ys, y.shape))
  # Bring each operand to [batch..., m, k] / [batch..., k, n] or their transposes.
  a = np.ascontiguousarray(np.transpose(x, [xs.index(c) for c in batch] + sorted(
      [xs.index(k), xs.index(m)])))
  b = np.ascontiguousarray(np.transpose(y, [ys.index(c) for c in batch] + sorted(
      [ys.index(k), ys.index(n)])))
  trans_a = TRANS if xs.index(k) < xs.index(m) else NO_TRANS
  trans_b = TRANS if ys.index(n) < ys.index(k) else NO_TRANS
  lda, ldb = a.shape[-1], b.shape[-1]
  bf16 = lambda t: (t.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
  a16 = bf16(a).reshape(-1, a.shape[-2] * a.shape[-1])
  b16 = bf16(b).reshape(-1, b.shape[-2] * b.shape[-1])
  count = a16.shape[0]
  check = np.einsum(subscripts, x, y).reshape(count, -1)
  c = np.zeros((count, size[m] * size[n]), np.float32)
  pa = [a16[i].ctypes.data for i in range(count)]
  pb = [b16[i].ctypes.data for i in range(count)]
  pc = [c[i].ctypes.data for i in range(count)]

  def run(keep=(a16, b16, c)):  # the arrays stay alive as long as `run`
    del keep
    for i in range(count):  # pylint: disable=consider-using-enumerate
      mkl.cblas_gemm_bf16bf16f32(ROW_MAJOR, trans_a, trans_b, size[m], size[n], size[k],
                                 1.0, pa[i], lda, pb[i], ldb, 0.0, pc[i], size[n])
  run()  # every product here has out = [batch..., m, n]
  error = np.abs(c - check).max() / np.abs(check).max()
  if error > 0.05:
    raise RuntimeError(f'MKL {subscripts}: relative error {error:.3f} (operand layout?)')
  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--mkl_lib', default=None)
  parser.add_argument('--iomp_lib', default=None)
  args = parser.parse_args()
  mkl = load_mkl(args.mkl_lib, args.iomp_lib) if args.mkl_lib else None
  rng = np.random.RandomState(0)
  print(f'device: cpu, {os.cpu_count()} cores, bf16 units: '
        f'{sorted(cpu_features.bf16_units()) or "none"}\n')
  host_memory.keep_freed_memory()
  print('| product | shapes | XLA f32 | OpenBLAS kernel f32 | XLA bf16 -> f32 | '
        'XLA bf16 -> f32, laid out | MKL bf16 -> f32 | oneDNN kernel bf16 -> f32 | '
        'oneDNN / XLA laid out |')
  print('|---|---|---|---|---|---|---|---|---|')
  for what, subscripts, x_shape, y_shape in PRODUCTS:
    x = rng.randn(*x_shape).astype(np.float32)
    y = rng.randn(*y_shape).astype(np.float32)
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    bx, by = jx.astype(jnp.bfloat16), jy.astype(jnp.bfloat16)
    xla = jax.jit(lambda a, b, s=subscripts: jnp.einsum(s, a, b))
    kernel = jax.jit(lambda a, b, s=subscripts: cpu_gemm.einsum(s, a, b))
    xla16 = jax.jit(lambda a, b, s=subscripts: jnp.einsum(
        s, a, b, preferred_element_type=jnp.float32))
    flop = cpu_gemm_bench._flops(subscripts, x_shape, y_shape) / 1e9  # pylint: disable=protected-access
    laid_out = jax.jit(lambda a, b, s=subscripts: cpu_gemm.half_precision_einsum(s, a, b))
    times = [_median(lambda f=f, a=a, b=b: f(a, b).block_until_ready(), args.repeats)
             for f, a, b in ((xla, jx, jy), (kernel, jx, jy), (xla16, bx, by),
                             (laid_out, bx, by))]
    if mkl is not None:
      run = mkl_product(mkl, subscripts, x, y)
      times.append(_median(run, args.repeats))
    else:
      times.append(None)
    # What the 'fast' kernels run in bfloat16: the oneDNN kernel where it is built.
    times.append(_median(lambda: kernel(bx, by).block_until_ready(), args.repeats)
                 if cpu_gemm.has_bfloat16_kernel() else None)
    rate = lambda t: '-' if t is None else f'{t * 1e3:.2f} ms ({flop / t:.0f} GFLOP/s)'
    ratio = '-' if times[5] is None else f'{times[3] / times[5]:.2f}x'
    print(f'| {what} | `{subscripts}` {list(x_shape)} x {list(y_shape)} | '
          + ' | '.join(rate(t) for t in times) + f' | {ratio} |', flush=True)


if __name__ == '__main__':
  main()
