"""Matrix products that XLA:CPU runs slowly, done by OpenBLAS (float32) and oneDNN
(bfloat16) through XLA FFI calls.

Two kinds of product in a Perceiver's backward pass run well below the CPU's matmul peak
(~210 GFLOP/s here) under XLA:CPU (jax 0.10, 2 cores, float32, language_small shapes of
benchmarks/peer.py; `benchmarks/cpu_gemm.py`, table in BENCHMARKS.md):

                                           XLA        this kernel   torch 2.13
  weight gradients X^T G [R, Cin] x [R, Cout]  135-141     150-174     174-181 GFLOP/s
  attention's batched backward products        30-73       63-99       93-153 GFLOP/s
  (dV = P^T dO and dK = dS^T Q have a transposed operand: XLA 30-57)

`einsum` computes such products with OpenBLAS's SGEMM, one matrix (or column block) per
XLA thread. `einsum_fast_backward` is `jnp.einsum` whose backward products go through
`einsum`; its float32 forward stays XLA's (as fast there, and fusable into its
neighbours), its bfloat16 forward is the oneDNN kernel's where that runs.
The train-step speed-ups are in BENCHMARKS.md.

Only products with one contracted index, one free index per operand and at most two batch
indices take this path, on the CPU backend; everything else, and every other backend (and
a process with several devices, whose computations may be partitioned), is plain
`jnp.einsum` (same values up to float32 summation order).

bfloat16 operands go to oneDNN's matmul (brgemm on AVX-512 BF16 / AMX), which reads
transposed and strided operands in place and accumulates in float32
(`in_place_products`); `dense_bfloat16` is a dense layer's forward with the bias and the
rounding of the output inside oneDNN. Without oneDNN (or bfloat16 units) they go to
`half_precision_einsum`, laid out so that XLA keeps the product in bfloat16.

The kernels (cpu_gemm.cc) are compiled on first use with the system C++ compiler ($CXX or
c++) against jaxlib's FFI headers, the scipy-openblas32 package and, where installed,
the onednn-cpu-gomp packages, and cached in $PERCEIVER_AGENTS_CACHE (default
~/.cache/perceiver_agents). Without a compiler, or with PERCEIVER_AGENTS_CPU_GEMM=0,
`einsum` is `jnp.einsum` (a warning says why, once).
"""

import contextlib
import ctypes
import functools
import hashlib
import importlib.metadata
import logging
import math
import os
import pathlib
import shutil
import subprocess
import tempfile
from typing import Dict, Iterator, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from perceiver_agents.kernels import cpu_features

_TARGET = 'pa_strided_gemm'
_TARGET_BF16 = 'pa_strided_gemm_bf16'
_TARGET_DENSE_BF16 = 'pa_dense_bf16'
_SOURCE = pathlib.Path(__file__).with_name('cpu_gemm.cc')
_INT32_MAX = 2 ** 31 - 1
_SWITCH = 'PERCEIVER_AGENTS_CPU_GEMM'


def enabled() -> bool:
  """Whether `einsum` may use the kernel: one CPU device, not switched off, built.

  With several devices the computation may be partitioned, and the custom call has no
  sharding rule (XLA would gather its operands onto every device): XLA keeps those.
  """
  return (os.environ.get(_SWITCH, '1') != '0' and jax.default_backend() == 'cpu' and
          jax.device_count() == 1 and _load())


@contextlib.contextmanager
def xla_only() -> Iterator[None]:
  """Functions traced inside use XLA's products only (e.g. for XLA's cost analysis,
  which does not count the FLOPs of custom calls).

  The choice is made when a function is traced, and JAX caches traces per function
  object: a function jitted inside this context and jitted again outside it reuses
  the XLA-only trace. Trace a distinct function object inside (e.g. a fresh wrapper,
  as benchmarks/peer.py's model_flops does).
  """
  previous = os.environ.get(_SWITCH)
  os.environ[_SWITCH] = '0'
  try:
    yield
  finally:
    if previous is None:
      del os.environ[_SWITCH]
    else:
      os.environ[_SWITCH] = previous


def _cache_dir() -> pathlib.Path:
  default = pathlib.Path.home() / '.cache' / 'perceiver_agents'
  return pathlib.Path(os.environ.get('PERCEIVER_AGENTS_CACHE', default))


def _onednn() -> Tuple[str, str]:
  """(include dir, lib dir) of the onednn-cpu-gomp packages, or ('', '') without them."""
  try:
    lib = [f for f in importlib.metadata.files('onednn-cpu-gomp') or ()
           if f.name.startswith('libdnnl.so')]
    header = [f for f in importlib.metadata.files('onednn-devel-cpu-gomp') or ()
              if str(f).endswith('oneapi/dnnl/dnnl.hpp')]
  except importlib.metadata.PackageNotFoundError:
    return '', ''
  if not lib or not header:
    return '', ''
  return (str(header[0].locate().parent.parent.parent),
          str(lib[0].locate().parent))


def _build() -> pathlib.Path:
  """Compiles cpu_gemm.cc (once per source, jaxlib, OpenBLAS and oneDNN); returns the .so.

  With the onednn-cpu-gomp packages installed the library also holds the bfloat16
  kernel (`has_bfloat16_kernel`)."""
  import scipy_openblas32  # pylint: disable=g-import-not-at-top
  compiler = shutil.which(os.environ.get('CXX', 'c++'))
  if compiler is None:
    raise RuntimeError('no C++ compiler found ($CXX or c++)')
  lib_dir = scipy_openblas32.get_lib_dir()
  command = [compiler, '-O2', '-std=c++17', '-shared', '-fPIC', '-w',
             '-I', jax.ffi.include_dir(), '-I', scipy_openblas32.get_include_dir(),
             str(_SOURCE), '-L', lib_dir, '-l' + scipy_openblas32.get_library(),
             '-Wl,-rpath,' + lib_dir]
  dnnl_include, dnnl_lib = _onednn()
  if dnnl_lib:
    command += ['-DPA_ONEDNN', '-I', dnnl_include, '-L', dnnl_lib, '-l:libdnnl.so.3',
                '-lgomp', '-Wl,-rpath,' + dnnl_lib]
  key = hashlib.sha256('\0'.join(
      [_SOURCE.read_text(), jax.lib.__version__, scipy_openblas32.__version__]
      + command).encode()).hexdigest()[:16]
  target = _cache_dir() / f'cpu_gemm-{key}.so'
  if not target.exists():
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name, then renamed: concurrent processes never load a
    # half-written library.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
      built = pathlib.Path(tmp) / target.name
      result = subprocess.run(command + ['-o', str(built)], capture_output=True,
                              text=True, check=False)
      if result.returncode != 0:
        raise RuntimeError(f'{" ".join(command)} failed:\n{result.stderr[-2000:]}')
      os.replace(built, target)
  return target


@functools.lru_cache(maxsize=None)
def _library():
  """The built kernel library with its targets registered, or None (with a warning)."""
  try:
    library = ctypes.CDLL(str(_build()))
    library.pa_strided_gemm_init()
    jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(library.PaStridedGemm),
                                platform='cpu')
    if hasattr(library, 'PaStridedGemmBf16'):
      for target, symbol in ((_TARGET_BF16, library.PaStridedGemmBf16),
                             (_TARGET_DENSE_BF16, library.PaDenseBf16)):
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(symbol), platform='cpu')
  except (ImportError, OSError, RuntimeError, subprocess.SubprocessError) as e:
    logging.warning('perceiver_agents.kernels.cpu_gemm: OpenBLAS kernel unavailable, '
                    'XLA computes every product (%s)', e)
    return None
  return library


def _load() -> bool:
  """Builds, loads and registers the kernel; False (with a warning) if it cannot."""
  return _library() is not None


def has_bfloat16_kernel() -> bool:
  """Whether the oneDNN bfloat16 kernel is built (the onednn-cpu-gomp packages) and
  the CPU has AVX-512 BF16 or AMX, which it needs to beat XLA's own bfloat16 dots."""
  library = _library()
  return (library is not None and hasattr(library, 'PaStridedGemmBf16') and
          bool(cpu_features.bf16_units()))


def _row_major_strides(shape: Tuple[int, ...]) -> List[int]:
  strides, size = [], 1
  for dim in reversed(shape):
    strides.insert(0, size)
    size *= dim
  return strides


def _parse(subscripts: str) -> Tuple[str, str, str, str, str, str, str]:
  """'bhqk,bhkd->bhqd' -> (x, y, out, batch letters, contracted, x-free, y-free)."""
  try:
    inputs, out = subscripts.replace(' ', '').split('->')
    xs, ys = inputs.split(',')
  except ValueError:
    raise ValueError(f'einsum subscripts must read "x,y->out", got {subscripts!r}.')
  batch = ''.join(c for c in out if c in xs and c in ys)
  contracted = ''.join(c for c in xs if c in ys and c not in out)
  x_free = ''.join(c for c in xs if c not in ys)
  y_free = ''.join(c for c in ys if c not in xs)
  letters_ok = all(len(set(s)) == len(s) for s in (xs, ys, out))
  if (not letters_ok or len(batch) > 2 or len(contracted) != 1 or len(x_free) != 1
      or len(y_free) != 1 or sorted(out) != sorted(batch + x_free + y_free)):
    raise ValueError(
        f'cpu_gemm.einsum takes one contracted index, one free index per operand and at '
        f'most two batch indices, each letter once per operand; got {subscripts!r}.')
  return xs, ys, out, batch, contracted, x_free, y_free


def _gemm_dims(subscripts: str, x: jax.Array, y: jax.Array):
  """The kernel's operands and 16 dims for `subscripts`, or None if it cannot take them.

  Raises ValueError for subscripts of any other form (see `_parse`).
  """
  xs, ys, out, batch, k, m, n = _parse(subscripts)
  if x.ndim != len(xs) or y.ndim != len(ys):
    raise ValueError(f'einsum {subscripts!r}: operand shapes {tuple(x.shape)} and '
                     f'{tuple(y.shape)} do not have ranks {len(xs)} and {len(ys)}.')
  size: Dict[str, int] = dict(zip(xs, x.shape))
  for letter, dim in zip(ys, y.shape):
    if size.setdefault(letter, dim) != dim:
      raise ValueError(f'einsum {subscripts!r}: index {letter!r} is {size[letter]} in x '
                       f'{tuple(x.shape)} but {dim} in y {tuple(y.shape)}.')
  out_shape = tuple(size[c] for c in out)
  if (min(size[k], size[m], size[n]) < 2 or
      max(x.size, y.size, math.prod(out_shape)) > _INT32_MAX):
    return None  # size-1 matrix dims have no well-defined leading dimension
  strides = [dict(zip(letters, _row_major_strides(shape)))
             for letters, shape in ((xs, x.shape), (ys, y.shape), (out, out_shape))]
  (a, sa), (b, sb), sc = (x, strides[0]), (y, strides[1]), strides[2]
  if sc[n] != 1:  # out is [.., n, m]: compute out^T = op(y)^T op(x)^T instead
    (a, sa), (b, sb), m, n = (y, sb), (x, sa), n, m
  if sc[n] != 1 or (sa[k] != 1 and sa[m] != 1) or (sb[k] != 1 and sb[n] != 1):
    return None
  trans_a, lda = (0, sa[m]) if sa[k] == 1 else (1, sa[k])
  trans_b, ldb = (0, sb[k]) if sb[n] == 1 else (1, sb[n])
  outer, inner = ('', '') if not batch else (('', batch) if len(batch) == 1 else batch)
  batch_dims = [size.get(outer, 1), size.get(inner, 1)]
  batch_strides = [s.get(c, 0) for s in (sa, sb, sc) for c in (outer, inner)]
  dims = np.array(batch_dims + [size[m], size[n], size[k], trans_a, trans_b, lda, ldb,
                                sc[m]] + batch_strides, np.int64)
  return a, b, out_shape, dims


def accumulation_dtype(x: jax.Array, y: jax.Array) -> jnp.dtype:
  """The dtype products of x and y accumulate (and return) in: float32 for bfloat16 or
  float16 operands (XLA:CPU's fast path for them, AVX-512 BF16 / AMX where present),
  else their common dtype."""
  dtype = jnp.result_type(x, y)
  if dtype in (jnp.bfloat16, jnp.float16):
    return jnp.dtype(jnp.float32)
  return dtype


def einsum(subscripts: str, x: jax.Array, y: jax.Array) -> jax.Array:
  """`jnp.einsum(subscripts, x, y)`; through OpenBLAS on CPU in float32 (see module).

  bfloat16 (or float16) operands are multiplied by XLA with float32 accumulation, and
  the product is returned in float32 (`accumulation_dtype`); on CPU as
  `half_precision_einsum`.

  Args:
    subscripts: 'x,y->out' with one contracted letter, one free letter in each operand
      and up to two batch letters, e.g. 'bhqk,bhkd->bhqd', 'bqhd,bkhd->bhqk', 'rk,rn->kn'.
    x, y: the operands, in any layout the letters describe.
  Returns:
    The product, shaped as `out`.
  """
  plan = _gemm_dims(subscripts, x, y)  # validates the subscripts on every path
  if (plan is not None and x.dtype == jnp.float32 and y.dtype == jnp.float32 and
      enabled()):
    a, b, out_shape, dims = plan
    call = jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct(out_shape, jnp.float32),
                            vmap_method='sequential')
    return call(a, b, dims=dims)
  if plan is not None and in_place_products(x, y):
    a, b, out_shape, dims = plan
    call = jax.ffi.ffi_call(_TARGET_BF16, jax.ShapeDtypeStruct(out_shape, jnp.float32),
                            vmap_method='sequential')
    return call(a, b, dims=dims)
  if _half_precision_on_cpu(x, y):
    return half_precision_einsum(subscripts, x, y)
  return jnp.einsum(subscripts, x, y, preferred_element_type=accumulation_dtype(x, y))


def in_place_products(x: jax.Array, y: jax.Array) -> bool:
  """Whether `einsum` of x and y runs on the oneDNN kernel, which reads strided and
  transposed operands in place: bfloat16 operands, kernel built, bfloat16 units."""
  return (x.dtype == jnp.bfloat16 and y.dtype == jnp.bfloat16 and enabled() and
          has_bfloat16_kernel())


def dense_bfloat16(x: jax.Array, w: jax.Array, b: jax.Array,
                   out_dtype: jnp.dtype) -> jax.Array:
  """x [..., K] @ w [K, N] + b [N] by the oneDNN kernel (`in_place_products(x, w)`):
  bfloat16 operands and bias, float32 accumulation, the bias added before the output
  is rounded to `out_dtype` (bfloat16 or float32), all inside oneDNN."""
  if not has_bfloat16_kernel():
    raise RuntimeError('dense_bfloat16 needs the oneDNN kernel (has_bfloat16_kernel()).')
  out_dtype = jnp.dtype(out_dtype)
  if out_dtype not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)):
    raise ValueError(f'dense_bfloat16: out_dtype must be bfloat16 or float32, got {out_dtype}.')
  call = jax.ffi.ffi_call(_TARGET_DENSE_BF16,
                          jax.ShapeDtypeStruct(x.shape[:-1] + w.shape[1:], out_dtype),
                          vmap_method='broadcast_all')
  return call(x, w, b)


def _half_precision_on_cpu(x: jax.Array, y: jax.Array) -> bool:
  return (jax.default_backend() == 'cpu' and
          accumulation_dtype(x, y) != jnp.result_type(x, y))


def half_precision_einsum(subscripts: str, x: jax.Array, y: jax.Array) -> jax.Array:
  """`jnp.einsum(subscripts, x, y)` of bfloat16 (or float16) operands, accumulated and
  returned in float32, as a dot XLA:CPU keeps in bfloat16 (YNNPACK, AVX-512 BF16).

  XLA:CPU keeps a bfloat16 x bfloat16 -> float32 dot only where the left operand is a
  row-major [..., M, K] (contracted index last); a dot whose left operand has K
  elsewhere, or is a transpose XLA folded into the dot as a layout, gets both operands
  converted to float32 and runs as a float32 dot, slower than the float32 path
  (BENCHMARKS.md). So the operand with K last goes on the left; where neither has it
  (weight gradients X^T G, attention's dV = P^T dO and dK = dS^T Q) the smaller one is
  transposed in bfloat16 first, as a copy XLA cannot fold (`_materialised_transpose`).
  A product whose letters come out in another order than `out` is transposed after an
  optimisation barrier, as XLA would fold transpose(dot(x, y)) into dot(y, x).
  Subscripts as for `einsum`.
  """
  xs, ys, out, batch, k, _, _ = _parse(subscripts)
  if xs[-1] != k and ys[-1] != k:
    # Transpose the smaller operand so that k is its last index.
    if y.size < x.size:
      (x, xs), (y, ys) = (y, ys), (x, xs)
    moved = xs.replace(k, '') + k
    x = _materialised_transpose(x, [xs.index(c) for c in moved])
    xs = moved
  elif xs[-1] != k:
    (x, xs), (y, ys) = (y, ys), (x, xs)
  # lax.dot_general keeps x on the left (jnp.einsum may swap the operands).
  dims = (((xs.index(k),), (ys.index(k),)),
          (tuple(xs.index(c) for c in batch), tuple(ys.index(c) for c in batch)))
  product = jax.lax.dot_general(x, y, dims, preferred_element_type=jnp.float32)
  letters = batch + ''.join(c for c in xs + ys if c not in batch and c != k)
  if letters == out:
    return product
  return jnp.transpose(jax.lax.optimization_barrier(product),
                       [letters.index(c) for c in out])


def _row_major(x: jax.Array) -> jax.Array:
  """`x` as a row-major array XLA keeps (flattened behind an optimisation barrier): a
  transpose or other layout change in front of it is copied here, not folded into the
  consuming dot (see `_materialised_transpose`); an array already row-major passes
  through without a copy."""
  return jax.lax.optimization_barrier(x.reshape(-1)).reshape(x.shape)


def _materialised_transpose(x: jax.Array, permutation) -> jax.Array:
  """`jnp.transpose(x, permutation)` as a row-major copy that XLA keeps: flattened
  behind an optimisation barrier, since a bare transpose (even behind a barrier) is a
  layout change XLA folds into the consuming dot, whose bfloat16 operand in that
  layout it then converts to float32."""
  return _row_major(jnp.transpose(x, permutation))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def einsum_fast_backward(subscripts: str, x: jax.Array, y: jax.Array) -> jax.Array:
  """`jnp.einsum(subscripts, x, y)` whose two backward products go through `einsum`.

  Accumulates (and returns) in `accumulation_dtype(x, y)`: float32 for bfloat16
  operands, whose backward products take the cotangent in the operands' dtype.
  """
  return _forward(subscripts, x, y)[0]


def _forward(subscripts, x, y):
  if in_place_products(x, y):
    return einsum(subscripts, x, y), (x, y)
  if _half_precision_on_cpu(x, y):
    # Attention's operands arrive as heads-major transposes ([B, N, H, D] read as
    # [B, H, N, D]); XLA:CPU folds such a transpose into the dot and then runs it in
    # float32. As row-major copies (in bfloat16) they stay bfloat16 dots, forward and
    # backward (the copies are the residuals).
    x, y = _row_major(x), _row_major(y)
  out = jnp.einsum(subscripts, x, y, preferred_element_type=accumulation_dtype(x, y))
  return out, (x, y)


def _backward(subscripts, residuals, g):
  x, y = residuals
  xs, ys, out, *_ = _parse(subscripts)
  if _half_precision_on_cpu(x, y) and not in_place_products(x, y):
    g = _row_major(g.astype(x.dtype))  # e.g. dO read heads-major from [B, Q, H * D]
  return (einsum(f'{out},{ys}->{xs}', g.astype(y.dtype), y).astype(x.dtype),
          einsum(f'{xs},{out}->{ys}', x, g.astype(x.dtype)).astype(y.dtype))


einsum_fast_backward.defvjp(_forward, _backward)
