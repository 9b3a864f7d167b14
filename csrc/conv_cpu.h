// What the CPU kernels that run packed convolutions share (maximize_cpu.cpp, decoder2d.cpp): the packed matrix,
// the vector types their ISA-specific halves (conv_cpu_isa.h and each kernel's own *_isa.h) are built from, and
// the run-time choice between them. Everything is in an anonymous namespace, as the *_isa.h files are: each
// translation unit keeps its own copy, so no AVX-512 build of a function can be linked into an AVX2 path.
#pragma once
#include <torch/extension.h>
#include <immintrin.h>

#include <array>
#include <string>
#include <utility>

#include "kernel_params.h"
#include "maximize_math.h"
#include "simd.h"

namespace speechmax {
namespace {

constexpr int kMaxTile = 12;  // output rows per microkernel call at most

// A packed convolution: weights in panels of kConvPanel outputs (conv_cpu_isa.h), bias padded to coutp (or
// null); for maximize_step also its Winograd weights (maximize_cpu_isa.h).
struct Mat {
  const float* w = nullptr;
  const float* b = nullptr;
  int cin = 0, coutp = 0, taps = 0, pad = 0;
  const float* ww = nullptr;  // Winograd weights: 5 blocks (one per transform point) of S-tap panels, or null
  int S = 0;
  long astride = 0;
  // bf16 weights (maximize_step's bf16 precision, conv_bf16_isa.h / conv_amx.h), or null: per tap, per pair of
  // inputs (cin padded to kBf16K), per output (coutp padded to kBf16N), the pair (w[2p][o], w[2p + 1][o]).
  const uint16_t* wb = nullptr;
};


namespace isa_avx2 {
struct V : simd::Avx2 {
  static constexpr int NREG = 16;
  static reg relu(reg a) { return _mm256_max_ps(_mm256_setzero_ps(), a); }  // NaN in a -> NaN (mx::relu)
  static reg keep_where_positive(reg a, reg m) {
    return _mm256_and_ps(a, _mm256_cmp_ps(m, _mm256_setzero_ps(), _CMP_GT_OQ));
  }
};
}  // namespace isa_avx2

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace isa_avx512 {
struct V : simd::Avx512 {
  static constexpr int NREG = 32;
  static reg relu(reg a) { return _mm512_max_ps(_mm512_setzero_ps(), a); }  // NaN in a -> NaN (mx::relu)
  static reg keep_where_positive(reg a, reg m) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(m, _mm512_setzero_ps(), _CMP_GT_OQ), a);
  }
};
}  // namespace isa_avx512
#pragma GCC pop_options

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}

// isa: auto (the widest this CPU has), avx512 or avx2; true for AVX-512.
bool pick_avx512(const std::string& isa, const char* op) {
  const bool has512 = cpu_has_avx512();
  TORCH_CHECK(isa == "auto" || isa == "avx512" || isa == "avx2", op, ": unknown isa '", isa,
              "'; expected auto, avx512 or avx2");
  TORCH_CHECK(isa != "avx512" || has512, op, ": isa 'avx512' asked for, but this CPU has no AVX-512F");
  return isa == "avx512" || (isa == "auto" && has512);
}

void check_f32(const torch::Tensor& t, const char* name, const char* op) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(),
              op, ": ", name, " must be a contiguous float32 CPU tensor, got ", t.scalar_type(),
              t.is_contiguous() ? "" : " (not contiguous)");
}

// A (n, kDescCols) int64 matrix table.
void check_desc(const torch::Tensor& desc, const char* op) {
  TORCH_CHECK(desc.scalar_type() == torch::kInt64 && desc.is_contiguous() && desc.dim() == 2 &&
              desc.size(1) == kDescCols, op, ": desc must be (n, ", kDescCols, ") int64");
}

}  // namespace
}  // namespace speechmax
