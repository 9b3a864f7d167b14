// CUDA fused activation-maximization step: the CPU kernel's algorithm (maximize_cpu.cpp) with one thread
// block per sample. Standalone (raw pointers, no torch headers) so nvcc can compile it on machines whose torch
// has no CUDA; the per-element math is maximize_math.h, the header the CPU kernel is built from.
//
// Why a block per sample: a sample's forward and backward are a chain of ~40 dependent layers, and samples are
// independent. One block carrying one sample through the whole chain needs only __syncthreads() between
// layers -- no grid-wide synchronisation, no launch per layer, no whole-batch tensors. The weights (5.5 MB
// at the default shapes) are shared by all blocks through L2; a sample's activations (~0.7 MB) do not fit in
// shared memory, so each block owns a slice of a global scratch buffer that stays mostly L2-resident while
// the block works on it (the "fully fused" idea of tiny-cuda-nn, with L2 standing in for shared memory).
//
// The same source builds without nvcc (`g++ -x c++`): the device code then runs one "thread" per block on
// the host, which is how the tests check its indexing and math against autograd on a machine without a GPU
// (speechmax_maximize_step_emulated below).
#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define MXD __device__
#define MX_SYNC() __syncthreads()
#else
#define MXD
#define MX_SYNC() ((void)0)
#endif
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../kernel_params.h"
#include "../maximize_math.h"

namespace speechmax {
namespace mxc {

constexpr int kPad = kMaxConvPad;  // zero rows before and after every activation: what a direct conv reads
constexpr int kThreads = 256;
constexpr int kMaxClasses = 64;  // the objective's gradient at the logits lives in registers

struct Mat {
  const float* w;
  const float* b;
  int cin, coutp, taps, pad;
};

struct Net : MaximizeShape {
  Mat fc, fcT, c1[2], c1T[2], c2[2], c2T[2], c3, c3T, stem, stemT, head, headT;
  Mat b1[kMaxBlocks], b1T[kMaxBlocks], b2[kMaxBlocks], b2T[kMaxBlocks], pj[kMaxBlocks], pjT[kMaxBlocks];
  const float* mean;
  const float* istd;
};

struct Job {
  float* x;
  long nvar, B;
  const int64_t* targets;
  int objective, level, unit, optimizer, update;
  float lr, l2, beta1, beta2, eps, c1, c2;
  float* m;
  float* v;
  float* obj_out;
  float* grad_out;
};

// Offsets (floats, to row 0 of each buffer) inside one block's scratch slice.
struct Layout {
  long h0, dh0, gz, h1, dh1, h2, dh2, xn, dxn, gx, pool, dpool, logits, dlogits;
  long act[2 * kMaxBlocks + 1];
  long grad[3];
  long per_block;
};

static Layout make_layout(const Net& n) {
  Layout l;
  long at = 0;
  auto take = [&](long floats, long lead) { long p = at + lead; at += (floats + 31) / 32 * 32; return p; };
  const long rows = (n.T > 4 * n.T0 ? n.T : 4 * n.T0) + 2 * kPad;
  l.h0 = l.dh0 = l.gz = l.h1 = l.dh1 = l.h2 = l.dh2 = 0;
  if (n.latent) {
    l.h0 = take((n.T0 + 2L * kPad) * n.Cp, (long)kPad * n.Cp);
    l.dh0 = take((n.T0 + 2L * kPad) * n.Cp, (long)kPad * n.Cp);
    l.gz = take(n.Lp, 0);
    l.h1 = take((2L * n.T0 + 2 * kPad) * n.Cp, (long)kPad * n.Cp);
    l.dh1 = take((2L * n.T0 + 2 * kPad) * n.Cp, (long)kPad * n.Cp);
    l.h2 = take((4L * n.T0 + 2 * kPad) * n.C2p, (long)kPad * n.C2p);
    l.dh2 = take((4L * n.T0 + 2 * kPad) * n.C2p, (long)kPad * n.C2p);
  }
  l.xn = take(rows * n.Mp, (long)kPad * n.Mp);
  l.dxn = take(rows * n.Mp, (long)kPad * n.Mp);
  for (int i = 0; i < 1 + 2 * n.nb; ++i) l.act[i] = take(rows * n.cmp, (long)kPad * n.cmp);
  for (int i = 0; i < 3; ++i) l.grad[i] = take(rows * n.cmp, (long)kPad * n.cmp);
  l.gx = take((long)n.M * n.T, 0);
  l.pool = take(n.cmp, 0);
  l.dpool = take(n.cmp, 0);
  l.logits = take(n.NCp, 0);
  l.dlogits = take(n.NCp, 0);
  l.per_block = at;
  return l;
}

// The packed model (desc rows: weight offset, bias offset or -1, cin, coutp, taps, pad) as device pointers;
// false for what this kernel cannot hold.
static bool make_net(const MaximizeParams& p, const float* weights, const int64_t* desc, int n_mats,
                     const float* norm, Net* out) {
  Net n;
  memset(&n, 0, sizeof(n));
  if (!maximize_shape(p, &n) || n.NC > kMaxClasses) return false;
  n.mean = norm;
  n.istd = norm + n.M;
  int next = 0;
  bool ok = true;
  auto take = [&]() {
    Mat m;
    memset(&m, 0, sizeof(m));
    if (next >= n_mats) { ok = false; return m; }
    const int64_t* r = desc + kDescCols * next++;
    m.w = weights + r[0];
    m.b = r[1] >= 0 ? weights + r[1] : nullptr;
    m.cin = (int)r[2], m.coutp = (int)r[3], m.taps = (int)r[4], m.pad = (int)r[5];
    if (m.pad > kPad) ok = false;
    return m;
  };
  if (n.latent) {
    n.fc = take(), n.fcT = take();
    n.c1[0] = take(), n.c1[1] = take(), n.c1T[0] = take(), n.c1T[1] = take();
    n.c2[0] = take(), n.c2[1] = take(), n.c2T[0] = take(), n.c2T[1] = take();
    n.c3 = take(), n.c3T = take();
  }
  n.stem = take(), n.stemT = take();
  for (int i = 0; i < n.nb; ++i) {
    n.b1[i] = take(), n.b1T[i] = take(), n.b2[i] = take(), n.b2T[i] = take();
    if (n.proj[i]) n.pj[i] = take(), n.pjT[i] = take();
  }
  n.head = take(), n.headT = take();
  *out = n;
  return ok && next == n_mats;
}

// --- device code: one block (tid in [0, nth)) works on one sample ------------------------------------------

// Y[t][o] = epilogue(sum_{j, c} W[j*cin + c][o] X[(t + j - pad) * ldx + c]) for t < T, o < coutp; weights in
// panels of kConvPanel outputs. Epilogue as on the CPU: + bias, + init (may alias Y), ReLU, zero where mask <= 0.
// Consecutive threads take consecutive outputs: weight loads coalesce, input loads broadcast within a warp.
MXD static void conv(const Mat& m, const float* X, long ldx, int T, float* Y, long ldy, const float* bias,
                     const float* init, long ld_init, bool relu, const float* mask, long ld_mask, int tid, int nth) {
  const float* X0 = X - (long)m.pad * ldx;
  const long K = (long)m.taps * m.cin;
  for (long idx = tid; idx < (long)T * m.coutp; idx += nth) {
    const int t = (int)(idx / m.coutp), o = (int)(idx % m.coutp);
    const int p0 = o / kConvPanel * kConvPanel;
    const int pw = m.coutp - p0 < kConvPanel ? m.coutp - p0 : kConvPanel;
    const float* w = m.w + (long)p0 * K + (o - p0);
    float acc = 0.0f;
    for (int j = 0; j < m.taps; ++j) {
      const float* xr = X0 + (long)(t + j) * ldx;
      const float* wj = w + (long)j * m.cin * pw;
      for (int c = 0; c < m.cin; ++c) acc = fmaf(wj[(long)c * pw], xr[c], acc);
    }
    if (bias) acc += bias[o];
    if (init) acc += init[(long)t * ld_init + o];
    if (relu) acc = mx::relu(acc);
    if (mask) acc = mx::relu_grad(acc, mask[(long)t * ld_mask + o]);
    Y[(long)t * ldy + o] = acc;
  }
  MX_SYNC();
}

MXD static void fwd(const Mat& m, const float* X, long ldx, int T, float* Y, long ldy, bool relu, int tid, int nth,
                    const float* init = nullptr, long ld_init = 0) {
  conv(m, X, ldx, T, Y, ldy, m.b, init, ld_init, relu, nullptr, 0, tid, nth);
}

MXD static void bwd(const Mat& m, const float* dY, long ld_dy, int T, float* dX, long ld_dx, const float* mask,
                    long ld_mask, int tid, int nth, const float* init = nullptr) {
  conv(m, dY, ld_dy, T, dX, ld_dx, nullptr, init, ld_dx, false, mask, ld_mask, tid, nth);
}

// Sum over the block; every thread gets the result. red: nth doubles of shared memory.
MXD static double block_sum(double v, double* red, int tid, int nth) {
  red[tid] = v;
  MX_SYNC();
  for (int s = 1; s < nth; s *= 2) {
    double other = (tid % (2 * s) == 0 && tid + s < nth) ? red[tid + s] : 0.0;
    MX_SYNC();
    if (tid % (2 * s) == 0) red[tid] += other;
    MX_SYNC();
  }
  const double r = red[0];
  MX_SYNC();
  return r;
}

// Classifier forward up to the objective's layer, the objective, and its gradient back to dxn.
MXD static float classifier_step(const Net& n, const Job& job, int target, const Layout& lay, float* ws, double* red,
                                 int tid, int nth) {
  const int T = n.T, ld = n.cmp;
  float* xn = ws + lay.xn;
  fwd(n.stem, xn, n.Mp, T, ws + lay.act[0], ld, true, tid, nth);
  const int top = job.level < n.nb ? job.level : n.nb;
  for (int i = 1; i <= top; ++i) {
    const float* x = ws + lay.act[2 * i - 2];
    float* a = ws + lay.act[2 * i - 1];
    float* y = ws + lay.act[2 * i];
    fwd(n.b1[i - 1], x, ld, T, a, ld, true, tid, nth);
    if (n.proj[i - 1]) {
      fwd(n.pj[i - 1], x, ld, T, y, ld, false, tid, nth);
      fwd(n.b2[i - 1], a, ld, T, y, ld, true, tid, nth, y, ld);
    } else {
      fwd(n.b2[i - 1], a, ld, T, y, ld, true, tid, nth, x, ld);
    }
  }
  const float* y = ws + lay.act[2 * top];
  const int ctop = n.ch[top];
  float* dc = ws + lay.grad[0];
  float* pool = ws + lay.pool;
  float* dpool = ws + lay.dpool;
  float obj;
  if (job.level > n.nb) {
    for (int c = tid; c < ctop; c += nth) {
      double s = 0;
      for (int t = 0; t < T; ++t) s += y[t * ld + c];
      pool[c] = (float)(s / T);
    }
    MX_SYNC();
    if (job.level == n.nb + 2) {
      fwd(n.head, pool, 0, 1, ws + lay.logits, n.NCp, false, tid, nth);
      const bool unit = job.objective == mx::kUnit;
      // every thread computes it (35 classes): no broadcast needed; thread 0 writes the gradient
      float dl[kMaxClasses];
      obj = mx::class_objective(ws + lay.logits, n.NC, unit ? job.unit : target, unit ? mx::kLogit : job.objective,
                                dl);
      if (tid == 0)
        for (int i = 0; i < n.NC; ++i) ws[lay.dlogits + i] = dl[i];
      MX_SYNC();
      bwd(n.headT, ws + lay.dlogits, 0, 1, dpool, 0, nullptr, 0, tid, nth);
    } else {
      obj = pool[job.unit];
      for (int c = tid; c < ctop; c += nth) dpool[c] = c == job.unit ? 1.0f : 0.0f;
      MX_SYNC();
    }
    for (int i = tid; i < T * ctop; i += nth) {
      const int t = i / ctop, c = i % ctop;
      dc[t * ld + c] = mx::relu_grad(dpool[c] / T, y[t * ld + c]);
    }
  } else {
    double s = 0;
    for (int t = tid; t < T; t += nth) s += y[t * ld + job.unit];
    obj = (float)(block_sum(s, red, tid, nth) / T);
    for (int i = tid; i < T * ctop; i += nth) {
      const int t = i / ctop, c = i % ctop;
      dc[t * ld + c] = c == job.unit ? mx::relu_grad(1.0f / T, y[t * ld + c]) : 0.0f;
    }
  }
  MX_SYNC();
  float* dx = ws + lay.grad[1];
  float* da = ws + lay.grad[2];
  for (int i = top; i >= 1; --i) {
    const float* xprev = ws + lay.act[2 * i - 2];
    bwd(n.b2T[i - 1], dc, ld, T, da, ld, ws + lay.act[2 * i - 1], ld, tid, nth);
    if (n.proj[i - 1]) {
      bwd(n.pjT[i - 1], dc, ld, T, dx, ld, nullptr, 0, tid, nth);
      bwd(n.b1T[i - 1], da, ld, T, dx, ld, xprev, ld, tid, nth, dx);
    } else {
      bwd(n.b1T[i - 1], da, ld, T, dx, ld, xprev, ld, tid, nth, dc);
    }
    float* tmp = dc;
    dc = dx;
    dx = tmp;
  }
  bwd(n.stemT, dc, ld, T, ws + lay.dxn, n.Mp, nullptr, 0, tid, nth);
  return obj;
}

// The update of sample s from its gradient g (nvar): as finish_sample() in maximize_cpu.cpp.
MXD static void finish(const Job& job, long s, float obj, const float* g, double* red, int tid, int nth) {
  const long nv = job.nvar;
  double part = 0;
  for (long k = tid; k < nv; k += nth) part += (double)g[k] * g[k];
  const double sumsq = block_sum(part, red, tid, nth);
  if (job.grad_out)
    for (long k = tid; k < nv; k += nth) job.grad_out[s * nv + k] = g[k];
  const bool ok = isfinite(obj) && isfinite(sumsq);
  if (tid == 0) job.obj_out[s] = ok ? obj : NAN;
  if (!ok || !job.update) return;
  float* x = job.x + s * nv;
  if (job.optimizer == mx::kRmsNormalized) {
    const float scale = mx::rms_step_scale(sumsq, (int)nv, job.lr);
    for (long k = tid; k < nv; k += nth) x[k] += scale * g[k];
  } else {
    float* m = job.m + s * nv;
    float* v = job.v + s * nv;
    for (long k = tid; k < nv; k += nth)
      x[k] += mx::adam_delta(g[k], m + k, v + k, job.beta1, job.beta2, job.c1, job.c2, job.eps, job.lr);
  }
}

MXD static void sample_step(const Net& n, const Job& job, const Layout& lay, float* ws, long s, double* red, int tid,
                            int nth) {
  const int T = n.T, M = n.M, Mp = n.Mp;
  const int target = (int)job.targets[s];
  if (n.latent) {
    float* h0 = ws + lay.h0;
    float* dh0 = ws + lay.dh0;
    float* xn = ws + lay.xn;
    fwd(n.fc, job.x + s * n.L, n.L, 1, h0, 0, true, tid, nth);
    for (int ph = 0; ph < 2; ++ph) fwd(n.c1[ph], h0, n.Cp, n.T0, ws + lay.h1 + ph * n.Cp, 2 * n.Cp, true, tid, nth);
    for (int ph = 0; ph < 2; ++ph)
      fwd(n.c2[ph], ws + lay.h1, n.Cp, 2 * n.T0, ws + lay.h2 + ph * n.C2p, 2 * n.C2p, true, tid, nth);
    fwd(n.c3, ws + lay.h2, n.C2p, T, xn, Mp, false, tid, nth);
    const float obj = classifier_step(n, job, target, lay, ws, red, tid, nth);
    bwd(n.c3T, ws + lay.dxn, Mp, 4 * n.T0, ws + lay.dh2, n.C2p, ws + lay.h2, n.C2p, tid, nth);
    for (int ph = 0; ph < 2; ++ph)
      bwd(n.c2T[ph], ws + lay.dh2 + ph * n.C2p, 2 * n.C2p, 2 * n.T0, ws + lay.dh1, n.Cp,
          ph ? ws + lay.h1 : nullptr, n.Cp, tid, nth, ph ? ws + lay.dh1 : nullptr);
    for (int ph = 0; ph < 2; ++ph)
      bwd(n.c1T[ph], ws + lay.dh1 + ph * n.Cp, 2 * n.Cp, n.T0, dh0, n.Cp, ph ? h0 : nullptr, n.Cp, tid, nth,
          ph ? dh0 : nullptr);
    float* gz = ws + lay.gz;
    bwd(n.fcT, dh0, 0, 1, gz, 0, nullptr, 0, tid, nth);
    const float* z = job.x + s * n.L;
    for (int k = tid; k < n.L; k += nth) gz[k] += mx::l2_grad(z[k], job.l2, n.L);
    MX_SYNC();
    finish(job, s, obj, gz, red, tid, nth);
  } else {
    const float* x = job.x + s * job.nvar;
    float* xn = ws + lay.xn;
    for (int i = tid; i < M * T; i += nth) {
      const int c = i / T, t = i % T;
      xn[t * Mp + c] = (x[i] - n.mean[c]) * n.istd[c];
    }
    MX_SYNC();
    const float obj = classifier_step(n, job, target, lay, ws, red, tid, nth);
    float* gx = ws + lay.gx;
    const float* dxn = ws + lay.dxn;
    for (int i = tid; i < M * T; i += nth) {
      const int c = i / T, t = i % T;
      gx[i] = (dxn[t * Mp + c] + mx::l2_grad(xn[t * Mp + c], job.l2, M * T)) * n.istd[c];
    }
    MX_SYNC();
    finish(job, s, obj, gx, red, tid, nth);
  }
  MX_SYNC();
}

#if defined(__CUDACC__)
__global__ void __launch_bounds__(kThreads) maximize_step_kernel(Net n, Job job, Layout lay, float* scratch) {
  __shared__ double red[kThreads];
  float* ws = scratch + (long)blockIdx.x * lay.per_block;
  for (long s = blockIdx.x; s < job.B; s += gridDim.x) sample_step(n, job, lay, ws, s, red, threadIdx.x, blockDim.x);
}
#endif

// One step of B samples (nvar floats each) from the params' step settings; c1, c2: Adam's bias corrections.
static Job make_job(const MaximizeParams& p, float* x, long B, long nvar, const int64_t* targets, float* adam_m,
                    float* adam_v, float* obj_out, float* grad_out) {
  Job j;
  j.x = x, j.B = B, j.nvar = nvar, j.targets = targets;
  j.objective = p.objective, j.level = p.level, j.unit = p.unit, j.optimizer = p.optimizer, j.update = p.update;
  j.lr = (float)p.lr, j.l2 = (float)p.l2, j.beta1 = (float)p.beta1, j.beta2 = (float)p.beta2, j.eps = (float)p.eps;
  j.c1 = (float)(1.0 - pow(p.beta1, (double)p.adam_step));
  j.c2 = (float)(1.0 - pow(p.beta2, (double)p.adam_step));
  j.m = adam_m, j.v = adam_v, j.obj_out = obj_out, j.grad_out = grad_out;
  return j;
}

}  // namespace mxc
}  // namespace speechmax

using speechmax::MaximizeParams;
using speechmax::mxc::Layout;
using speechmax::mxc::Net;

// Floats of scratch one block needs (0: the params describe an architecture the kernel cannot hold).
extern "C" long speechmax_maximize_scratch_floats(const MaximizeParams* p) {
  Net n;
  return speechmax::maximize_shape(*p, &n) && n.NC <= speechmax::mxc::kMaxClasses
             ? speechmax::mxc::make_layout(n).per_block
             : 0;
}

#if defined(__CUDACC__)
// One ascent step for B samples on the GPU; every pointer but p and desc is device memory. desc (n_mats x
// kDescCols) is the host copy of a PackedMaximizer's. scratch: `blocks` x speechmax_maximize_scratch_floats()
// floats, zeroed here (the zero rows around every activation are never written afterwards).
extern "C" cudaError_t speechmax_maximize_step_cuda(const MaximizeParams* p, const float* weights,
                                                    const int64_t* desc, int n_mats, const float* norm, float* x,
                                                    long B, long nvar, const int64_t* targets, float* adam_m,
                                                    float* adam_v, float* obj_out, float* grad_out, float* scratch,
                                                    int blocks, cudaStream_t stream) {
  using namespace speechmax::mxc;
  Net n;
  if (!make_net(*p, weights, desc, n_mats, norm, &n)) return cudaErrorInvalidValue;
  if (B == 0) return cudaSuccess;
  const Layout lay = make_layout(n);
  if (blocks < 1) return cudaErrorInvalidValue;
  if (blocks > B) blocks = (int)B;
  cudaError_t err = cudaMemsetAsync(scratch, 0, sizeof(float) * lay.per_block * blocks, stream);
  if (err != cudaSuccess) return err;
  const Job job = make_job(*p, x, B, nvar, targets, adam_m, adam_v, obj_out, grad_out);
  maximize_step_kernel<<<blocks, kThreads, 0, stream>>>(n, job, lay, scratch);
  return cudaGetLastError();
}
#else
// Host emulation of the kernel (one thread per block, blocks in sequence), for testing without a GPU: the same
// arguments as speechmax_maximize_step_cuda, host pointers.
extern "C" int speechmax_maximize_step_emulated(const MaximizeParams* p, const float* weights, const int64_t* desc,
                                                int n_mats, const float* norm, float* x, long B, long nvar,
                                                const int64_t* targets, float* adam_m, float* adam_v,
                                                float* obj_out, float* grad_out) {
  using namespace speechmax::mxc;
  Net n;
  if (!make_net(*p, weights, desc, n_mats, norm, &n)) return 1;
  const Layout lay = make_layout(n);
  float* ws = new float[lay.per_block]();
  double red[1];
  const Job job = make_job(*p, x, B, nvar, targets, adam_m, adam_v, obj_out, grad_out);
  for (long s = 0; s < B; ++s) sample_step(n, job, lay, ws, s, red, 0, 1);
  delete[] ws;
  return 0;
}
#endif
