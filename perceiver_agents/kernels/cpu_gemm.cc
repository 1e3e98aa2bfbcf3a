// Strided, two-level batched GEMMs for XLA:CPU, as XLA FFI custom calls.
//
//   for b < nb, h < nh:   C[b, h] = op(A[b, h]) @ op(B[b, h])      (M x K) @ (K x N)
//
// Every matrix is row-major with its own leading dimension, and (b, h) select it through
// element strides, so transposed operands and head-interleaved layouts such as
// [B, Q, H, D] are read in place. The work is spread over XLA's intra-op thread pool,
// each piece single-threaded in its library:
//
//   PaStridedGemm      float32, OpenBLAS's SGEMM (the private copy shipped by the
//                      scipy-openblas32 package); pieces: GEMMs, or column blocks.
//   PaStridedGemmBf16  bfloat16 operands, float32 accumulation and output, oneDNN's
//                      matmul (brgemm on AVX-512 BF16 / AMX); built with -DPA_ONEDNN
//                      against the onednn-cpu-gomp package. Pieces: slices of a batch
//                      index (one primitive call each), or column blocks.
//   PaDenseBf16        (with PA_ONEDNN) a dense layer's forward x @ w + bias, bfloat16
//                      operands, the output rounded to bfloat16 (or float32) inside
//                      oneDNN; pieces: row blocks.
//
// Built and loaded by cpu_gemm.py.
#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cblas.h"
#include "xla/ffi/api/ffi.h"

#ifdef PA_ONEDNN
#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"
#endif

namespace ffi = xla::ffi;

namespace {

// The 16 int64 attributes, in order (see cpu_gemm.py).
struct Dims {
  int64_t nb, nh, m, n, k, trans_a, trans_b, lda, ldb, ldc;
  int64_t a_b, a_h, b_b, b_h, c_b, c_h;  // element strides of the two batch indices
};
static_assert(sizeof(Dims) == 16 * sizeof(int64_t), "Dims is filled from 16 int64s");

// Runs item(0) .. item(total - 1) on the calling thread and up to threads - 1 helpers
// of XLA's pool; returns when all are done.
struct Job {
  std::function<void(int64_t)> item;
  int64_t total = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable finished;

  // Claims items until none are left; whoever completes the last one signals.
  void Work() {
    int64_t count = 0;
    for (int64_t i; (i = next.fetch_add(1)) < total; ++count) item(i);
    if (count > 0 && done.fetch_add(count) + count == total) {
      std::lock_guard<std::mutex> lock(mu);
      finished.notify_all();
    }
  }
};

void ParallelFor(ffi::ThreadPool& pool, int64_t total, std::function<void(int64_t)> item) {
  if (total == 0) return;
  // Shared with the helper tasks, which may start after this call has returned.
  auto job = std::make_shared<Job>();
  job->item = std::move(item);
  job->total = total;
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), total) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([job] { job->Work(); });
  job->Work();
  std::unique_lock<std::mutex> lock(job->mu);
  job->finished.wait(lock, [&] { return job->done.load() == job->total; });
}

bool ReadDims(ffi::Span<const int64_t> dims, Dims* d) {
  if (dims.size() != 16) return false;
  std::copy(dims.begin(), dims.end(), reinterpret_cast<int64_t*>(d));
  return true;
}

// Column blocks per GEMM: enough pieces for every thread when there are few GEMMs,
// blocks of at least 64 columns.
int64_t ColumnSplits(const Dims& d, int64_t threads, int64_t gemms) {
  const int64_t max_splits = std::max<int64_t>(1, d.n / 64);
  return std::min(max_splits, (threads + gemms - 1) / gemms);
}

ffi::Error StridedGemm(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a,
                       ffi::Buffer<ffi::F32> b, ffi::ResultBuffer<ffi::F32> c,
                       ffi::Span<const int64_t> dims) {
  Dims d;
  if (!ReadDims(dims, &d)) {
    return ffi::Error::InvalidArgument("pa_strided_gemm: dims must hold 16 integers");
  }
  const float* pa = a.typed_data();
  const float* pb = b.typed_data();
  float* pc = c->typed_data();
  const int64_t gemms = d.nb * d.nh;
  const int64_t splits = ColumnSplits(d, std::max<int64_t>(1, pool.num_threads()), gemms);
  const int64_t block = (d.n + splits - 1) / splits;
  ParallelFor(pool, gemms * splits, [=](int64_t item) {
    const int64_t gemm = item / splits, n0 = (item % splits) * block;
    const int64_t bi = gemm / d.nh, hi = gemm % d.nh;
    const int64_t n = std::min(block, d.n - n0);
    // Column n0 of op(B): column n0 of B, or row n0 of the stored [N, K] matrix.
    const float* b_block = pb + bi * d.b_b + hi * d.b_h + (d.trans_b ? n0 * d.ldb : n0);
    scipy_cblas_sgemm(CblasRowMajor, d.trans_a ? CblasTrans : CblasNoTrans,
                      d.trans_b ? CblasTrans : CblasNoTrans, d.m, n, d.k, 1.0f,
                      pa + bi * d.a_b + hi * d.a_h, d.lda, b_block, d.ldb, 0.0f,
                      pc + bi * d.c_b + hi * d.c_h + n0, d.ldc);
  });
  return ffi::Error::Success();
}

#ifdef PA_ONEDNN

// One oneDNN matmul primitive per piece shape: [nb, nh] x op(A) [M, K] @ op(B) [K, N],
// strides as Dims describes them (a batch index of size 1 gets a nominal stride).
using Shape = std::array<int64_t, 16>;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::memory::desc Desc(dnnl::memory::data_type type, int64_t nb, int64_t nh,
                        int64_t rows, int64_t cols, int64_t s_b, int64_t s_h,
                        int64_t s_row, int64_t s_col) {
  const int64_t matrix = rows * cols;
  return dnnl::memory::desc({nb, nh, rows, cols}, type,
                            {nb == 1 ? nh * matrix : s_b, nh == 1 ? matrix : s_h,
                             s_row, s_col});
}

// oneDNN runs each piece on its calling thread (its OpenMP team would compete with
// XLA's threads); primitives are created for one thread as well.
void SingleThreaded() {
  thread_local bool single = (omp_set_num_threads(1), true);
  (void)single;
}

struct Piece {
  dnnl::memory::desc a, b, c, scratchpad, bias;  // bias: dense layers only
  dnnl::matmul matmul;
};

// The piece for `key`, created on first use: `describe` fills a new Piece's memory
// descriptors (bias: zero for none); its primitive takes the caller's scratchpad, as
// one primitive runs on several threads at once. One cache per Key type.
template <typename Key, typename Describe>
const Piece& CachedPiece(const Key& key, Describe describe) {
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<Piece>> cache;
  SingleThreaded();
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<Piece>& piece = cache[key];
  if (piece == nullptr) {
    auto p = std::make_unique<Piece>();
    describe(p.get());
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    auto pd = p->bias.is_zero()
                  ? dnnl::matmul::primitive_desc(Engine(), p->a, p->b, p->c, attr)
                  : dnnl::matmul::primitive_desc(Engine(), p->a, p->b, p->bias, p->c, attr);
    p->scratchpad = pd.scratchpad_desc();
    p->matmul = dnnl::matmul(pd);
    piece = std::move(p);
  }
  return *piece;
}

const Piece& GetPiece(const Dims& d, int64_t nb, int64_t nh, int64_t n) {
  const Shape key = {nb, nh, d.m, n, d.k, d.trans_a, d.trans_b, d.lda, d.ldb, d.ldc,
                     d.a_b, d.a_h, d.b_b, d.b_h, d.c_b, d.c_h};
  return CachedPiece(key, [&](Piece* p) {
    using dt = dnnl::memory::data_type;
    p->a = d.trans_a ? Desc(dt::bf16, nb, nh, d.m, d.k, d.a_b, d.a_h, 1, d.lda)
                     : Desc(dt::bf16, nb, nh, d.m, d.k, d.a_b, d.a_h, d.lda, 1);
    p->b = d.trans_b ? Desc(dt::bf16, nb, nh, d.k, n, d.b_b, d.b_h, 1, d.ldb)
                     : Desc(dt::bf16, nb, nh, d.k, n, d.b_b, d.b_h, d.ldb, 1);
    p->c = Desc(dt::f32, nb, nh, d.m, n, d.c_b, d.c_h, d.ldc, 1);
  });
}

void RunPiece(const Piece& p, const uint16_t* a, const uint16_t* b, void* c,
              const uint16_t* bias = nullptr) {
  SingleThreaded();
  thread_local dnnl::stream stream(Engine());
  thread_local std::vector<uint8_t> scratch;
  // Each piece's arguments on this thread, made once (pieces live as long as the
  // process); a call only points them at its buffers. Making the memory objects and
  // the map on every call cost about as much as one of attention's small products.
  thread_local std::unordered_map<const Piece*, std::unordered_map<int, dnnl::memory>> bound;
  // 64-byte aligned, as oneDNN lays out its buffers from the scratchpad's start.
  if (scratch.size() < p.scratchpad.get_size() + 64) {
    scratch.resize(p.scratchpad.get_size() + 64);
  }
  void* aligned = scratch.data() + (-reinterpret_cast<uintptr_t>(scratch.data()) & 63);
  auto& args = bound[&p];
  if (args.empty()) {
    const auto unbound = [&](const dnnl::memory::desc& desc) {
      return dnnl::memory(desc, Engine(), DNNL_MEMORY_NONE);
    };
    args = {{DNNL_ARG_SRC, unbound(p.a)}, {DNNL_ARG_WEIGHTS, unbound(p.b)},
            {DNNL_ARG_DST, unbound(p.c)}, {DNNL_ARG_SCRATCHPAD, unbound(p.scratchpad)}};
    if (!p.bias.is_zero()) args.emplace(DNNL_ARG_BIAS, unbound(p.bias));
  }
  args.at(DNNL_ARG_SRC).set_data_handle(const_cast<uint16_t*>(a));
  args.at(DNNL_ARG_WEIGHTS).set_data_handle(const_cast<uint16_t*>(b));
  args.at(DNNL_ARG_DST).set_data_handle(c);
  args.at(DNNL_ARG_SCRATCHPAD).set_data_handle(aligned);
  if (!p.bias.is_zero()) args.at(DNNL_ARG_BIAS).set_data_handle(const_cast<uint16_t*>(bias));
  p.matmul.execute(stream, args);
  stream.wait();
}

ffi::Error StridedGemmBf16(ffi::ThreadPool pool, ffi::Buffer<ffi::BF16> a,
                           ffi::Buffer<ffi::BF16> b, ffi::ResultBuffer<ffi::F32> c,
                           ffi::Span<const int64_t> dims) {
  Dims d;
  if (!ReadDims(dims, &d)) {
    return ffi::Error::InvalidArgument("pa_strided_gemm_bf16: dims must hold 16 integers");
  }
  const auto* pa = reinterpret_cast<const uint16_t*>(a.untyped_data());
  const auto* pb = reinterpret_cast<const uint16_t*>(b.untyped_data());
  float* pc = c->typed_data();
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  try {
    if (d.nb >= threads || d.nh >= threads) {
      // Slices of the outer batch index (or of the inner one, if the outer is short).
      const bool outer = d.nb >= threads;
      const int64_t length = outer ? d.nb : d.nh;
      const int64_t slice = (length + threads - 1) / threads;
      const int64_t pieces = (length + slice - 1) / slice;
      const Piece& full = GetPiece(d, outer ? slice : d.nb, outer ? d.nh : slice, d.n);
      const int64_t rest = length - (pieces - 1) * slice;
      const Piece& last = GetPiece(d, outer ? rest : d.nb, outer ? d.nh : rest, d.n);
      ParallelFor(pool, pieces, [&, outer, slice, pieces](int64_t i) {
        const int64_t a_s = outer ? d.a_b : d.a_h, b_s = outer ? d.b_b : d.b_h;
        const int64_t c_s = outer ? d.c_b : d.c_h, first = i * slice;
        RunPiece(i == pieces - 1 ? last : full, pa + first * a_s, pb + first * b_s,
                 pc + first * c_s);
      });
    } else {
      const int64_t gemms = d.nb * d.nh;
      const int64_t splits = ColumnSplits(d, threads, gemms);
      const int64_t block = (d.n + splits - 1) / splits;
      const Piece& full = GetPiece(d, 1, 1, block);
      const Piece& last = GetPiece(d, 1, 1, d.n - (splits - 1) * block);
      ParallelFor(pool, gemms * splits, [&, splits, block](int64_t item) {
        const int64_t gemm = item / splits, split = item % splits, n0 = split * block;
        const int64_t bi = gemm / d.nh, hi = gemm % d.nh;
        RunPiece(split == splits - 1 ? last : full, pa + bi * d.a_b + hi * d.a_h,
                 pb + bi * d.b_b + hi * d.b_h + (d.trans_b ? n0 * d.ldb : n0),
                 pc + bi * d.c_b + hi * d.c_h + n0);
      });
    }
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("pa_strided_gemm_bf16: oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

// A dense layer's forward: out [R, N] = x [R, K] @ w [K, N] + bias [N], bfloat16 operands
// and bias, float32 accumulation, the output rounded to bfloat16 or kept in float32 (its
// dtype says which) inside oneDNN, with the bias added first. Pieces: row blocks.
// Rows, N, K and whether the output is float32.
using DenseKey = std::array<int64_t, 4>;

const Piece& GetDensePiece(const DenseKey& key) {
  return CachedPiece(key, [&](Piece* p) {
    using dt = dnnl::memory::data_type;
    const auto [rows, n, k, out_f32] = key;
    p->a = dnnl::memory::desc({rows, k}, dt::bf16, {k, 1});
    p->b = dnnl::memory::desc({k, n}, dt::bf16, {n, 1});
    p->c = dnnl::memory::desc({rows, n}, out_f32 ? dt::f32 : dt::bf16, {n, 1});
    p->bias = dnnl::memory::desc({1, n}, dt::bf16, {n, 1});
  });
}

ffi::Error DenseBf16(ffi::ThreadPool pool, ffi::Buffer<ffi::BF16> x,
                     ffi::Buffer<ffi::BF16> w, ffi::Buffer<ffi::BF16> bias,
                     ffi::Result<ffi::AnyBuffer> out) {
  const auto x_dims = x.dimensions(), w_dims = w.dimensions();
  if (w_dims.size() != 2 || x_dims.size() == 0 || x_dims[x_dims.size() - 1] != w_dims[0] ||
      bias.element_count() != w_dims[1]) {
    return ffi::Error::InvalidArgument("pa_dense_bf16: x [..., K], w [K, N], bias [N]");
  }
  const bool out_f32 = out->element_type() == ffi::DataType::F32;
  if (!out_f32 && out->element_type() != ffi::DataType::BF16) {
    return ffi::Error::InvalidArgument("pa_dense_bf16: the output is float32 or bfloat16");
  }
  const int64_t k = w_dims[0], n = w_dims[1];
  const int64_t rows = static_cast<int64_t>(x.element_count()) / std::max<int64_t>(k, 1);
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t pieces = std::max<int64_t>(1, std::min(threads, rows / 64));
  const int64_t block = (rows + pieces - 1) / pieces;
  const auto* px = reinterpret_cast<const uint16_t*>(x.untyped_data());
  const auto* pw = reinterpret_cast<const uint16_t*>(w.untyped_data());
  const auto* pb = reinterpret_cast<const uint16_t*>(bias.untyped_data());
  auto* po = static_cast<char*>(out->untyped_data());
  const int64_t out_bytes = out_f32 ? 4 : 2;
  try {
    const Piece& full = GetDensePiece({block, n, k, out_f32});
    const Piece& last = GetDensePiece({rows - (pieces - 1) * block, n, k, out_f32});
    ParallelFor(pool, pieces, [&, block, pieces](int64_t i) {
      RunPiece(i == pieces - 1 ? last : full, px + i * block * k, pw,
               po + i * block * n * out_bytes, pb);
    });
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("pa_dense_bf16: oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

#endif  // PA_ONEDNN

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PaStridedGemm, StridedGemm,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<ffi::Span<const int64_t>>("dims"));

#ifdef PA_ONEDNN
XLA_FFI_DEFINE_HANDLER_SYMBOL(PaStridedGemmBf16, StridedGemmBf16,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<ffi::Span<const int64_t>>("dims"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PaDenseBf16, DenseBf16,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::AnyBuffer>());
#endif

// Each GEMM runs on one XLA thread: OpenBLAS's own threads would compete with them.
extern "C" void pa_strided_gemm_init() { scipy_openblas_set_num_threads(1); }
