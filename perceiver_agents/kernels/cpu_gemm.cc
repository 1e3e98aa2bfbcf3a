// Strided, two-level batched float32 GEMM for XLA:CPU, as an XLA FFI custom call.
//
//   for b < nb, h < nh:   C[b, h] = op(A[b, h]) @ op(B[b, h])      (M x K) @ (K x N)
//
// Every matrix is row-major with its own leading dimension, and (b, h) select it through
// element strides, so head-interleaved layouts such as [B, Q, H, D] are read in place.
// The GEMMs (and, when there are fewer of them than threads, column blocks of them) are
// spread over XLA's intra-op thread pool; each runs single-threaded in OpenBLAS (the
// private copy shipped by the scipy-openblas32 package). Built and loaded by cpu_gemm.py.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "cblas.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// The 16 int64 attributes, in order (see cpu_gemm.py).
struct Dims {
  int64_t nb, nh, m, n, k, trans_a, trans_b, lda, ldb, ldc;
  int64_t a_b, a_h, b_b, b_h, c_b, c_h;  // element strides of the two batch indices
};
static_assert(sizeof(Dims) == 16 * sizeof(int64_t), "Dims is filled from 16 int64s");

struct Job {
  Dims d;
  const float* a;
  const float* b;
  float* c;
  int64_t splits;       // column blocks per GEMM
  int64_t block;        // columns per block
  int64_t total;        // nb * nh * splits work items
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable finished;

  void RunItem(int64_t item) const {
    const int64_t gemm = item / splits, n0 = (item % splits) * block;
    const int64_t bi = gemm / d.nh, hi = gemm % d.nh;
    const int64_t n = std::min(block, d.n - n0);
    // Column n0 of op(B): column n0 of B, or row n0 of the stored [N, K] matrix.
    const float* b_block = b + bi * d.b_b + hi * d.b_h + (d.trans_b ? n0 * d.ldb : n0);
    scipy_cblas_sgemm(CblasRowMajor, d.trans_a ? CblasTrans : CblasNoTrans,
                      d.trans_b ? CblasTrans : CblasNoTrans, d.m, n, d.k, 1.0f,
                      a + bi * d.a_b + hi * d.a_h, d.lda, b_block, d.ldb, 0.0f,
                      c + bi * d.c_b + hi * d.c_h + n0, d.ldc);
  }

  // Claims items until none are left; whoever completes the last one signals.
  void Work() {
    int64_t count = 0;
    for (int64_t item; (item = next.fetch_add(1)) < total; ++count) RunItem(item);
    if (count > 0 && done.fetch_add(count) + count == total) {
      std::lock_guard<std::mutex> lock(mu);
      finished.notify_all();
    }
  }
};

ffi::Error StridedGemm(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a,
                       ffi::Buffer<ffi::F32> b, ffi::ResultBuffer<ffi::F32> c,
                       ffi::Span<const int64_t> dims) {
  if (dims.size() != 16) {
    return ffi::Error::InvalidArgument("pa_strided_gemm: dims must hold 16 integers");
  }
  // Shared with the helper tasks, which may start after this call has returned.
  auto job = std::make_shared<Job>();
  std::copy(dims.begin(), dims.end(), reinterpret_cast<int64_t*>(&job->d));
  job->a = a.typed_data();
  job->b = b.typed_data();
  job->c = c->typed_data();
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t gemms = job->d.nb * job->d.nh;
  // Enough items for every thread when there are few GEMMs, blocks >= 64 columns.
  const int64_t max_splits = std::max<int64_t>(1, job->d.n / 64);
  job->splits = std::min(max_splits, (threads + gemms - 1) / gemms);
  job->block = (job->d.n + job->splits - 1) / job->splits;
  job->total = gemms * job->splits;
  if (job->total == 0) return ffi::Error::Success();
  const int64_t helpers = std::min(threads, job->total) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([job] { job->Work(); });
  job->Work();
  std::unique_lock<std::mutex> lock(job->mu);
  job->finished.wait(lock, [&] { return job->done.load() == job->total; });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PaStridedGemm, StridedGemm,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<ffi::Span<const int64_t>>("dims"));

// Each GEMM runs on one XLA thread: OpenBLAS's own threads would compete with them.
extern "C" void pa_strided_gemm_init() { scipy_openblas_set_num_threads(1); }
