// The vector operations both CPU kernels (wavenet_cpu.cpp, maximize_cpu.cpp) build their ISA-specific
// code from: AVX2/FMA, the build's portable baseline, and AVX-512F, compiled for that target only here and
// chosen by the callers at run time. Each kernel derives its own V from these, adding its register budget
// and the few operations only it needs.
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
#pragma GCC pop_options

}  // namespace speechmax::simd
