// Per-step WaveNet math shared by the fused CPU sampler (wavenet_cpu.cpp) and the CUDA sampler
// (cuda/wavenet.cu): the gate, the residual update, frame and ring indexing, and the inverse-CDF draw.
// The matrix products around them are backend-specific; everything between them is here, once.
//
// Functions are `static`: every translation unit (and every ISA-specific region of wavenet_cpu.cpp) keeps
// its own copy, so the linker can never hand an AVX-512 build of one of them to a caller on an AVX2 CPU.
#pragma once
#include <math.h>

#include "sm_math.h"

#if defined(_OPENMP) && !defined(__CUDA_ARCH__)
#define WN_PRAGMA(x) _Pragma(#x)
#define WN_SIMD WN_PRAGMA(omp simd)
#define WN_SIMD_REDUCE(op, v) WN_PRAGMA(omp simd reduction(op : v))
#else
#define WN_SIMD
#define WN_SIMD_REDUCE(op, v)
#endif

#define WN_FN SM_HD static inline

namespace speechmax {
namespace wn {

constexpr float kResScale = 0.70710678118654752440f;  // sqrt(1/2), RES_SCALE in speechmax/ops/wavenet.py

WN_FN float bits_as_float(int i) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(i);
#else
  return __builtin_bit_cast(float, i);
#endif
}

// exp(x) by Cody-Waite range reduction and the Cephes polynomial: ~1 ulp on [-87, 88], written in plain
// arithmetic so that compilers vectorise the loops that call it (libm's expf does not vectorise here).
// Outside that range the result saturates: exp(-87) ~ 1.6e-38 stands for 0, which no caller can tell apart.
// The constants are named so that the CPU sampler's explicit vector gate (gate_v, wavenet_cpu_isa.h) uses them.
constexpr float kExpLo = -87.0f, kExpHi = 88.0f, kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // ln 2 = kLn2Hi + kLn2Lo
constexpr float kExpP0 = 1.9875691500e-4f, kExpP1 = 1.3981999507e-3f, kExpP2 = 8.3334519073e-3f,
                kExpP3 = 4.1665795894e-2f, kExpP4 = 1.6666665459e-1f, kExpP5 = 5.0000001201e-1f;

WN_FN float fexp(float x) {
  x = x < kExpLo ? kExpLo : (x > kExpHi ? kExpHi : x);  // (ternaries vectorise; fminf/fmaxf do not)
  // round to nearest by the 1.5 * 2^23 trick (floorf does not vectorise inside GCC target regions)
  const float n = (x * kLog2e + 12582912.0f) - 12582912.0f;
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = kExpP0;
  p = p * r + kExpP1;
  p = p * r + kExpP2;
  p = p * r + kExpP3;
  p = p * r + kExpP4;
  p = p * r + kExpP5;
  p = p * r * r + r + 1.0f;
  return p * bits_as_float(((int)n + 127) << 23);
}

// The WaveNet gate: z = tanh(a) * sigmoid(b), a from the first half of the gate channels, b the second.
// With e = exp(-2|a|) and f = exp(-b): sign(a) (1 - e) / ((1 + e) (1 + f)), one division instead of two
// (f <= exp(87), so the product stays finite); absolute error ~1e-7, what the products after it care about.
WN_FN float gate(float a, float b) {
  const float e = fexp(-2.0f * fabsf(a)), f = fexp(-b);
  return copysignf(1.0f - e, a) / ((1.0f + e) * (1.0f + f));
}

// x <- (x + W_res z + b_res) * sqrt(1/2); r = W_res z + b_res.
WN_FN float residual(float x, float r) { return (x + r) * kResScale; }

// Conditioning frame read by sample t (centred STFT frames): (t + hop/2) // hop.
WN_FN long frame_of(long t, int hop) { return (t + hop / 2) / hop; }

// Ring slot of layer with dilation d at step `step`: it holds x[step - d] on entry and x[step] on exit.
WN_FN int ring_slot(long step, int d) { return (int)(step % d); }

// p[k] = exp(logits[k] / temperature - max); returns sum(p). Division, not a multiply by 1/temperature,
// as the reference computes it.
WN_FN float softmax_numerators(const float* logits, int n, float temperature, float* p) {
  float m = -INFINITY;
  WN_SIMD_REDUCE(max, m)
  for (int k = 0; k < n; ++k) {
    p[k] = logits[k] / temperature;
    m = p[k] > m ? p[k] : m;
  }
  float s = 0.0f;
  WN_SIMD_REDUCE(+, s)
  for (int k = 0; k < n; ++k) {
    p[k] = fexp(p[k] - m);
    s += p[k];
  }
  return s;
}

// Class k is drawn when cdf[k-1] <= u < cdf[k], cdf[k] = sum_{j<=k} p[j] * inv_sum; clamped to n - 1.
// The running sum is in double and each cdf value rounded to float, as torch's CPU cumsum does, so draws
// agree with the reference except when u lies within rounding of a boundary (a near-tie).
WN_FN int inverse_cdf(const float* p, int n, float inv_sum, float u) {
  double c = 0.0;
  for (int k = 0; k < n; ++k) {
    c += (double)(p[k] * inv_sum);
    if ((float)c > u) return k;
  }
  return n - 1;
}

WN_FN int argmax(const float* x, int n) {
  int best = 0;
  for (int k = 1; k < n; ++k)
    if (x[k] > x[best]) best = k;
  return best;
}

// draw_from_logits of speechmax/ops/wavenet.py for one item: temperature 0 means argmax. scratch: n floats.
WN_FN int draw(const float* logits, int n, float temperature, float u, float* scratch) {
  if (temperature == 0.0f) return argmax(logits, n);
  const float s = softmax_numerators(logits, n, temperature, scratch);
  return inverse_cdf(scratch, n, 1.0f / s, u);
}

}  // namespace wn
}  // namespace speechmax
