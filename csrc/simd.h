// The vector operations the CPU kernels (wavenet_cpu.cpp, maximize_cpu.cpp, peak.cpp) build their ISA-specific
// code from: AVX2/FMA, the build's portable baseline, and AVX-512F (with the bf16 pair dot, vdpbf16ps, and its
// exact emulation), compiled for that target only here and chosen by the callers at run time. Each kernel
// derives its own V from these, adding its register budget and the few operations only it needs.
#pragma once
#include <immintrin.h>

namespace speechmax::simd {

struct Avx2 {
  using reg = __m256;
  static constexpr int W = 8;  // floats per register
  static reg zero() { return _mm256_setzero_ps(); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static reg set1(float x) { return _mm256_set1_ps(x); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
};

#pragma GCC push_options
#pragma GCC target("avx512f")
struct Avx512 {
  using reg = __m512;
  static constexpr int W = 16;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static reg set1(float x) { return _mm512_set1_ps(x); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
};

// bf16 pairs held in fp32 lanes (the even element in the low half) -> both elements as fp32: a bf16 is the top
// half of an fp32.
static inline void bf16_split(__m512 v, __m512& lo, __m512& hi) {
  const __m512i r = _mm512_castps_si512(v);
  lo = _mm512_castsi512_ps(_mm512_slli_epi32(r, 16));
  hi = _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32((int)0xFFFF0000u)));
}

// vdpbf16ps emulated exactly (the bf16 x bf16 products are exact in fp32; the instruction adds the odd pair's
// product, then the even one's, each rounded to nearest): what the bf16 paths are tested against on CPUs
// without the instruction.
static inline __m512 dpbf16_emulated(__m512 acc, __m512 w, __m512 x) {
  __m512 wl, wh, xl, xh;
  bf16_split(w, wl, wh);
  bf16_split(x, xl, xh);
  return _mm512_fmadd_ps(wl, xl, _mm512_fmadd_ps(wh, xh, acc));
}
#pragma GCC pop_options

// vdpbf16ps on bf16 pairs held in fp32 lanes: every lane gains w0*x0 + w1*x1.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bf16")
static inline __m512 dpbf16(__m512 acc, __m512 w, __m512 x) {
  return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_castps_si512(w), (__m512bh)_mm512_castps_si512(x));
}
#pragma GCC pop_options

}  // namespace speechmax::simd
