// CUDA WaveNet sampler. Standalone (raw pointers, no torch headers) so nvcc can compile it on machines whose
// torch has no CUDA; the per-element math is wavenet_step.h, the header the CPU sampler is built from.
//
// Design: one persistent block per batch item runs every step of that item. An autoregressive step is a
// chain of ~3 dependent matrix-vector products per layer, too small to spread one item over several SMs
// (the grid-wide barrier per layer would cost more than the work), while items are independent: batch B
// fills B SMs with no synchronisation between blocks. Inside a block a thread computes whole outputs
// (GEMV rows) and the block meets at __syncthreads between the dependent phases. Activations, the current
// frame's conditioning for all layers (projected in the kernel when a step enters a new frame, never
// materialised per sample) and the softmax live in shared memory; weights are the CPU sampler's packed fp32
// panels, input-major inside a panel, so the threads of a warp read consecutive outputs of one input row
// (coalesced) and all blocks share them through L2 (5 MB for the default model).
#include <cuda_runtime.h>

#include "../wavenet_step.h"
#include "wavenet_args.h"

namespace speechmax {
namespace {

constexpr int kThreads = 256;

struct Matrix {
  long off;
  int Mp, Kp;
  long bias_off;
};

__device__ Matrix matrix(const SpeechmaxWavenetCudaArgs& a, int i) {
  const int64_t* d = a.desc + kDescCols * i;
  return {(long)d[0], (int)d[2], (int)d[4], (long)d[5]};
}

// Y[o] = bias[o] + init[o] + sum_k W[o, k] X[k] for the outputs o in [o0, o0 + n) of matrix m (one per thread).
__device__ void gemv(const SpeechmaxWavenetCudaArgs& a, const Matrix& m, const float* X, const float* init,
                     float* Y, int o0, int n) {
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const int o = o0 + j, p0 = o / kWavenetPanel * kWavenetPanel;
    const int P = m.Mp - p0 < kWavenetPanel ? m.Mp - p0 : kWavenetPanel;
    const float* w = a.weights + m.off + (long)p0 * m.Kp + (o - p0);
    float acc = a.biases[m.bias_off + o] + (init ? init[j] : 0.0f);
    for (int k = 0; k < m.Kp; ++k) acc = fmaf(w[(long)k * P], X[k], acc);
    Y[j] = acc;
  }
}

__global__ void __launch_bounds__(kThreads) wavenet_sample_kernel(const SpeechmaxWavenetCudaArgs a) {
  extern __shared__ float smem[];
  const int b = blockIdx.x, tid = threadIdx.x;
  const int L = a.L, R = a.R, Rp = a.Rp, Ghp = a.Ghp, Sp = a.Sp, Op = a.Op, NC = a.NC, NCp = a.NCp;
  float* xc = smem;                        // Cp: this frame's cond-net features
  float* cond = xc + a.Cp;                 // L * 2Ghp: every layer's gate conditioning for this frame
  float* xin = cond + L * 2 * Ghp;         // 2Rp: [x[t-d] | x[t]]
  float* h = xin + 2 * Rp;                 // 2Ghp
  float* z = h + 2 * Ghp;                  // Ghp
  float* skip = z + Ghp;                   // Sp, then Rp of residual outputs right after it
  float* res = skip + Sp;                  // Rp
  float* h1 = res + Rp;                    // Op
  float* logits = h1 + Op;                 // NCp
  float* p = logits + NCp;                 // NCp softmax numerators
  __shared__ int prev;
  __shared__ float red;

  const int n_pad = a.Cp + L * 2 * Ghp + 2 * Rp + 2 * Ghp + Ghp + Sp + Rp + Op + 2 * NCp;
  for (int i = tid; i < n_pad; i += blockDim.x) smem[i] = 0.0f;  // padded channels must read as 0
  if (tid == 0) prev = (int)a.prev[b];
  __syncthreads();

  long frame = -1;
  for (long t = 0; t < a.T; ++t) {
    const long step = a.step + t;
    const long f = wn::frame_of(a.t0 + t, a.hop);
    if (f != frame) {
      frame = f;
      for (int c = tid; c < a.C; c += blockDim.x) xc[c] = a.feats[((long)b * a.F + f) * a.C + c];
      __syncthreads();
      gemv(a, matrix(a, 0), xc, nullptr, cond, 0, L * 2 * Ghp);
    }
    for (int r = tid; r < R; r += blockDim.x) xin[Rp + r] = a.embed[(long)prev * R + r];
    __syncthreads();
    for (int l = 0; l < L; ++l) {
      const int slot = wn::ring_slot(step, a.dil[l]);
      float* ring = a.rings + ((long)b * a.ring_len + a.ring_off[l] + slot) * R;
      for (int r = tid; r < R; r += blockDim.x) {  // each thread reads its element before writing it
        xin[r] = ring[r];
        ring[r] = xin[Rp + r];
      }
      __syncthreads();
      gemv(a, matrix(a, 1 + 3 * l), xin, cond + l * 2 * Ghp, h, 0, 2 * Ghp);
      __syncthreads();
      for (int j = tid; j < Ghp; j += blockDim.x) z[j] = wn::gate(h[j], h[Ghp + j]);
      __syncthreads();
      // skip and residual outputs in one phase: both read z only
      const Matrix ms = matrix(a, 2 + 3 * l), mr = matrix(a, 3 + 3 * l);
      for (int j = tid; j < Sp + Rp; j += blockDim.x) {
        const bool is_skip = j < Sp;
        const Matrix& m = is_skip ? ms : mr;
        const int o = is_skip ? j : j - Sp, p0 = o / kWavenetPanel * kWavenetPanel;
        const int P = m.Mp - p0 < kWavenetPanel ? m.Mp - p0 : kWavenetPanel;
        const float* w = a.weights + m.off + (long)p0 * m.Kp + (o - p0);
        float acc = a.biases[m.bias_off + o] + (is_skip && l > 0 ? skip[o] : 0.0f);
        for (int k = 0; k < m.Kp; ++k) acc = fmaf(w[(long)k * P], z[k], acc);
        (is_skip ? skip : res)[o] = acc;
      }
      __syncthreads();
      for (int r = tid; r < Rp; r += blockDim.x) xin[Rp + r] = wn::residual(xin[Rp + r], res[r]);
      __syncthreads();
    }
    for (int j = tid; j < Sp; j += blockDim.x) skip[j] = fmaxf(skip[j], 0.0f);
    __syncthreads();
    gemv(a, matrix(a, 1 + 3 * L), skip, nullptr, h1, 0, Op);
    __syncthreads();
    for (int j = tid; j < Op; j += blockDim.x) h1[j] = fmaxf(h1[j], 0.0f);
    __syncthreads();
    gemv(a, matrix(a, 2 + 3 * L), h1, nullptr, logits, 0, NCp);
    __syncthreads();

    if (a.logits)
      for (int k = tid; k < NC; k += blockDim.x) a.logits[b * a.ld_logits + t * NC + k] = logits[k];
    int q;
    if (a.teacher) {
      q = (int)a.teacher[b * a.ld_teacher + t];
    } else if (a.temperature == 0.0f) {
      q = wn::argmax(logits, NC);  // every thread scans the same shared values: no broadcast needed
    } else {
      // The softmax numerators in parallel; the max, the sum and the inverse-CDF scan on one thread, in the
      // order wavenet_step.h prescribes.
      for (int k = tid; k < NC; k += blockDim.x) p[k] = logits[k] / a.temperature;
      __syncthreads();
      if (tid == 0) {
        float m = -INFINITY;
        for (int k = 0; k < NC; ++k) m = fmaxf(m, p[k]);
        red = m;
      }
      __syncthreads();
      for (int k = tid; k < NC; k += blockDim.x) p[k] = wn::fexp(p[k] - red);
      __syncthreads();
      if (tid == 0) {
        float s = 0.0f;
        for (int k = 0; k < NC; ++k) s += p[k];
        prev = wn::inverse_cdf(p, NC, 1.0f / s, a.uniforms[b * a.ld_u + t]);
      }
      __syncthreads();
      q = prev;
    }
    __syncthreads();  // everyone has read `prev` / `red` before thread 0 writes them again
    if (tid == 0) {
      prev = q;
      a.classes[b * a.ld_classes + t] = q;
      if (a.wave) a.wave[b * a.ld_wave + t] = a.decode[q];
    }
    __syncthreads();
  }
  if (tid == 0) a.prev[b] = prev;
}

}  // namespace
}  // namespace speechmax

extern "C" size_t speechmax_wavenet_cuda_smem(const SpeechmaxWavenetCudaArgs* a) {
  return sizeof(float) *
         (size_t)(a->Cp + a->L * 2 * a->Ghp + 2 * a->Rp + 2 * a->Ghp + a->Ghp + a->Sp + a->Rp + a->Op + 2 * a->NCp);
}

extern "C" cudaError_t speechmax_wavenet_sample_cuda(const SpeechmaxWavenetCudaArgs* a, cudaStream_t stream) {
  if (a->B == 0 || a->T == 0) return cudaSuccess;
  const size_t smem = speechmax_wavenet_cuda_smem(a);
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(speechmax::wavenet_sample_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  speechmax::wavenet_sample_kernel<<<a->B, speechmax::kThreads, smem, stream>>>(*a);
  return cudaGetLastError();
}
