// Fused WaveNet sampler on the CPU: the whole autoregressive loop in C++, the GIL released, OpenMP over the
// batch (each thread owns a contiguous block of items for all steps, so threads never synchronise).
//
// Per step, for a thread's block of items: project the conditioning for every layer when the step enters a
// new frame (from the cond-net output at frame rate -- never a per-sample tensor), then for every layer read
// and refill its ring buffer, gate GEMM + gate, skip GEMM, residual GEMM + update, then the output head and
// the inverse-CDF draw from the caller's uniform. The per-element math is wavenet_step.h, which the CUDA
// sampler compiles too (the gate runs here as an explicit vector, gate_v, on that file's exp constants, with a
// reciprocal in place of its division); the GEMMs are wavenet_cpu_isa.h, built once for AVX2 (the portable
// baseline) and once for AVX-512, picked at run time. Weights are fp32, or bf16 widened to fp32 in registers (a 16-bit
// shift), with fp32 accumulation either way.
#include <torch/extension.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernel_params.h"
#include "ops.h"
#include "simd.h"
#include "wavenet_step.h"

namespace speechmax {
namespace {

constexpr int kF32 = 0, kBF16 = 1, kBF16Dot = 2;   // weight modes, see wavenet_cpu_isa.h

template <int, class T>
struct Dependent {  // names T in a way that depends on a template parameter: lookup waits for instantiation
  using type = T;
};

struct MatrixDesc {
  size_t off;
  int M, Mp, K, Kp;
  size_t bias_off;
};

// The packed model as the kernels see it: its shape, and raw pointers into the tensors of a PackedWaveNet.
struct Model : WavenetShape {
  const float* w_f32;
  const uint16_t* w_bf16;
  const float* bias;
  const float* embed;
  const int64_t* desc;

  // Matrix order: conditioning projection, then (gate, skip, residual) per layer, then the two head layers.
  static constexpr int kCond = 0;
  static int gate(int l) { return 1 + 3 * l; }
  static int skip(int l) { return 2 + 3 * l; }
  static int res(int l) { return 3 + 3 * l; }
  static int head1(int L) { return 1 + 3 * L; }
  static int head2(int L) { return 2 + 3 * L; }
  static int n_matrices(int L) { return 3 + 3 * L; }

  MatrixDesc matrix(int i) const {
    const int64_t* d = desc + kDescCols * i;
    return {(size_t)d[0], (int)d[1], (int)d[2], (int)d[3], (int)d[4], (size_t)d[5]};
  }
};

// One call of T samples. uniforms / teacher / classes / wave are (B, T) and logits (B, T, NC), each with its
// own row stride (ld_*), so a caller can fill column slices of longer tensors; feats are (B, F, C). Sample t
// of the call reads frame frame_of(t0 + t) and ring slot ring_slot(step + t, d).
struct Job {
  const float* feats;
  long F;
  const float* uniforms;
  const int64_t* teacher;
  float* rings;
  int64_t* prev;
  long step, t0, T;
  float temperature;
  int64_t* classes;
  float* wave;
  float* logits;
  const float* decode;
  long ld_u, ld_teacher, ld_classes, ld_wave, ld_logits;
};

// Per-thread scratch for n items, every row a multiple of 16 floats (64 bytes).
struct Workspace {
  float *xc, *cond, *xin, *h, *z, *skip, *r, *h1, *logits, *scratch, *pairs;
  int* prev;

  // widest GEMM input row (kBF16Dot rounds each input to half as many 32-bit pairs)
  static int widest_input(const Model& m) { return std::max({m.Cp, 2 * m.Rp, m.Ghp, m.Sp, m.Op}); }
  static size_t floats(const Model& m, int n) {
    return (size_t)n * (m.Cp + m.L * 2 * m.Ghp + 2 * m.Rp + 2 * m.Ghp + m.Ghp + m.Sp + m.Rp + m.Op + m.NCp) +
           m.NCp + (size_t)n * widest_input(m) / 2 + ((n + 15) / 16) * 16;
  }
  static Workspace carve(const Model& m, int n, float* p) {
    Workspace w;
    auto take = [&](size_t k) { float* q = p; p += k; return q; };
    w.xc = take((size_t)n * m.Cp);
    w.cond = take((size_t)n * m.L * 2 * m.Ghp);
    w.xin = take((size_t)n * 2 * m.Rp);
    w.h = take((size_t)n * 2 * m.Ghp);
    w.z = take((size_t)n * m.Ghp);
    w.skip = take((size_t)n * m.Sp);
    w.r = take((size_t)n * m.Rp);
    w.h1 = take((size_t)n * m.Op);
    w.logits = take((size_t)n * m.NCp);
    w.scratch = take(m.NCp);
    w.pairs = take((size_t)n * widest_input(m) / 2);
    w.prev = reinterpret_cast<int*>(p);
    return w;
  }
};

namespace isa_avx2 {
struct V : simd::Avx2 {
  static constexpr int NBMAX = 2;  // 4 vectors x 2 items = 8 accumulators + 4 weights of 16 ymm registers
  // what gate_v (wavenet_cpu_isa.h) needs beyond simd::Avx2
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg fnma(reg a, reg b, reg c) { return _mm256_fnmadd_ps(a, b, c); }  // c - a b
  static reg clamp(reg x, float lo, float hi) { return _mm256_max_ps(_mm256_min_ps(x, set1(hi)), set1(lo)); }
  static reg round(reg x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg scale2(reg p, reg n) {  // p * 2^n, n integral in [-126, 127]
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  }
  static reg rcp(reg x) { return _mm256_rcp_ps(x); }  // relative error <= 1.5 * 2^-12; 0 above 2^126
  static reg sign(reg x) { return _mm256_and_ps(x, set1(-0.0f)); }
  static reg with_sign(reg x, reg s) { return _mm256_or_ps(x, s); }  // x >= 0
  static reg abs(reg x) { return _mm256_andnot_ps(set1(-0.0f), x); }
  // 8 (w[o][k], w[o][k+1]) bf16 pairs -> w[.][k] and w[.][k+1] as fp32: bf16 is the top half of an fp32.
  static void bf16_pair(const uint16_t* p, reg& lo, reg& hi) {
    const __m256i r = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    lo = _mm256_castsi256_ps(_mm256_slli_epi32(r, 16));
    hi = _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32((int)0xFFFF0000u)));
  }
};
#include "wavenet_cpu_isa.h"
}  // namespace isa_avx2

#pragma GCC push_options
#pragma GCC target("avx512f")
struct V512 : simd::Avx512 {
  static constexpr int NBMAX = 6;  // 4 vectors x 6 items = 24 accumulators + 4 weights of 32 zmm registers
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg fnma(reg a, reg b, reg c) { return _mm512_fnmadd_ps(a, b, c); }
  static reg clamp(reg x, float lo, float hi) { return _mm512_max_ps(_mm512_min_ps(x, set1(hi)), set1(lo)); }
  static reg round(reg x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg scale2(reg p, reg n) { return _mm512_scalef_ps(p, n); }
  static reg rcp(reg x) { return _mm512_rcp14_ps(x); }  // relative error <= 2^-14; denormal above 2^126
  static reg sign(reg x) {
    return _mm512_castsi512_ps(_mm512_and_epi32(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u)));
  }
  static reg with_sign(reg x, reg s) {
    return _mm512_castsi512_ps(_mm512_or_epi32(_mm512_castps_si512(x), _mm512_castps_si512(s)));
  }
  static reg abs(reg x) { return _mm512_abs_ps(x); }
  static void bf16_pair(const uint16_t* p, reg& lo, reg& hi) {
    simd::bf16_split(_mm512_loadu_ps(reinterpret_cast<const float*>(p)), lo, hi);
  }
};
namespace isa_avx512 {
using V = V512;
#include "wavenet_cpu_isa.h"
}  // namespace isa_avx512
// vdpbf16ps emulated exactly (simd.h): the kBF16Dot path tested on CPUs without it.
namespace isa_avx512bf16_emulated {
struct V : V512 {
  static reg dot(reg acc, reg w, reg x) { return simd::dpbf16_emulated(acc, w, x); }
};
#include "wavenet_cpu_isa.h"
}  // namespace isa_avx512bf16_emulated
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bf16")
namespace isa_avx512bf16 {
struct V : V512 {
  static reg dot(reg acc, reg w, reg x) { return simd::dpbf16(acc, w, x); }
};
#include "wavenet_cpu_isa.h"
}  // namespace isa_avx512bf16
#pragma GCC pop_options

bool cpu_has(const char* what) {
  __builtin_cpu_init();
  if (std::string(what) == "avx512f") return __builtin_cpu_supports("avx512f");
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
}

using RunFn = void (*)(const Model&, const Job&, int, int, float*);

// isa: auto (the widest this CPU has), avx2, avx512, avx512bf16 (bf16 weights only: vdpbf16ps, inputs rounded
// to bf16), avx512bf16-emulated (the same arithmetic without the instruction, for tests).
RunFn pick_kernel(const std::string& isa, bool bf16) {
  const bool has512 = cpu_has("avx512f"), has_bf16 = cpu_has("avx512bf16");
  TORCH_CHECK(isa == "auto" || isa == "avx2" || isa == "avx512" || isa == "avx512bf16" || isa == "avx512bf16-emulated",
              "wavenet_sample: unknown isa '", isa, "'; expected auto, avx2, avx512, avx512bf16 or avx512bf16-emulated");
  TORCH_CHECK(isa == "auto" || isa == "avx2" || has512, "wavenet_sample: isa '", isa, "' asked for, but this CPU has no AVX-512F");
  TORCH_CHECK(isa != "avx512bf16" || has_bf16, "wavenet_sample: isa 'avx512bf16' asked for, but this CPU has no AVX512-BF16");
  if (isa == "avx2" || (isa == "auto" && !has512))
    return bf16 ? isa_avx2::run_items<kBF16> : isa_avx2::run_items<kF32>;
  if (!bf16) return isa_avx512::run_items<kF32>;
  if (isa == "avx512bf16" || (isa == "auto" && has_bf16)) return isa_avx512bf16::run_items<kBF16Dot>;
  if (isa == "avx512bf16-emulated") return isa_avx512bf16_emulated::run_items<kBF16Dot>;
  return isa_avx512::run_items<kBF16>;
}

void check(const torch::Tensor& t, torch::ScalarType dt, const char* name, bool rows = false) {
  TORCH_CHECK(t.device().is_cpu(), "wavenet_sample: ", name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == dt, "wavenet_sample: ", name, " must be ", dt, ", got ", t.scalar_type());
  if (rows) {  // (B, T[, NC]): rows may be strided (column slices), everything inside a row contiguous
    TORCH_CHECK(t.dim() >= 2 && t.stride(0) >= 0 && (t.dim() == 2 ? t.stride(1) == 1 || t.size(1) <= 1
                                                                   : t.is_contiguous() || t[0].is_contiguous()),
                "wavenet_sample: ", name, " must have contiguous rows, got strides ", t.strides());
  } else {
    TORCH_CHECK(t.is_contiguous(), "wavenet_sample: ", name, " must be contiguous");
  }
}

}  // namespace

std::vector<std::string> wavenet_cpu_isas() {
  std::vector<std::string> isas{"avx2"};
  if (cpu_has("avx512f")) isas.insert(isas.end(), {"avx512", "avx512bf16-emulated"});
  if (cpu_has("avx512bf16")) isas.push_back("avx512bf16");
  return isas;
}

void wavenet_sample_cpu(const WavenetParams& p, const torch::Tensor& weights, const torch::Tensor& biases,
                        const torch::Tensor& desc, const torch::Tensor& embed, const torch::Tensor& decode,
                        const torch::Tensor& feats, const torch::Tensor& uniforms,
                        const c10::optional<torch::Tensor>& teacher, torch::Tensor& rings, torch::Tensor& prev,
                        torch::Tensor& classes, const c10::optional<torch::Tensor>& wave,
                        const c10::optional<torch::Tensor>& logits, int64_t threads, const std::string& isa) {
  Model m;
  TORCH_CHECK(wavenet_shape(p, &m), "wavenet_sample: params describe no WaveNet the sampler covers (", p.n_layers,
              " layers, at most ", kMaxWavenetLayers, "; dilations >= 1, an even gate width)");
  const int64_t step = p.step, t0 = p.t0;
  const double temperature = p.temperature;
  const bool bf16 = weights.scalar_type() == torch::kBFloat16;
  check(weights, bf16 ? torch::kBFloat16 : torch::kFloat32, "weights");
  check(biases, torch::kFloat32, "biases");
  check(desc, torch::kInt64, "desc");
  check(embed, torch::kFloat32, "embed");
  TORCH_CHECK(desc.dim() == 2 && desc.size(0) == Model::n_matrices(m.L) && desc.size(1) == kDescCols,
              "wavenet_sample: desc must be (", Model::n_matrices(m.L), ", ", kDescCols, "), got ", desc.sizes());
  TORCH_CHECK(embed.numel() == (int64_t)m.NC * m.R, "wavenet_sample: embed must be (", m.NC, ", ", m.R, ")");
  m.w_f32 = bf16 ? nullptr : weights.data_ptr<float>();
  m.w_bf16 = bf16 ? reinterpret_cast<const uint16_t*>(weights.data_ptr<at::BFloat16>()) : nullptr;
  m.bias = biases.data_ptr<float>();
  m.embed = embed.data_ptr<float>();
  m.desc = desc.data_ptr<int64_t>();
  for (int i = 0; i < Model::n_matrices(m.L); ++i) {
    const MatrixDesc d = m.matrix(i);
    TORCH_CHECK(d.off + (size_t)d.Mp * d.Kp <= (size_t)weights.numel() && d.bias_off + d.Mp <= (size_t)biases.numel(),
                "wavenet_sample: matrix ", i, " lies outside the packed weights");
  }

  check(feats, torch::kFloat32, "feats");
  TORCH_CHECK(feats.dim() == 3 && feats.size(2) == m.C, "wavenet_sample: feats must be (batch, frames, ", m.C,
              "), got ", feats.sizes());
  const int64_t B = feats.size(0), F = feats.size(1), T = classes.size(-1);
  check(classes, torch::kInt64, "classes", true);
  TORCH_CHECK(classes.dim() == 2 && classes.size(0) == B, "wavenet_sample: classes must be (", B, ", samples)");
  check(uniforms, torch::kFloat32, "uniforms", true);
  TORCH_CHECK(uniforms.sizes() == classes.sizes(), "wavenet_sample: uniforms must be ", classes.sizes(), ", got ",
              uniforms.sizes());
  if (teacher) {
    check(*teacher, torch::kInt64, "teacher", true);
    TORCH_CHECK(teacher->sizes() == classes.sizes(), "wavenet_sample: teacher must be ", classes.sizes());
    TORCH_CHECK(teacher->numel() == 0 || (teacher->min().item<int64_t>() >= 0 && teacher->max().item<int64_t>() < m.NC),
                "wavenet_sample: teacher classes must lie in [0, ", m.NC, ")");
  }
  if (wave) {
    check(*wave, torch::kFloat32, "wave", true);
    TORCH_CHECK(wave->sizes() == classes.sizes(), "wavenet_sample: wave must be ", classes.sizes());
  }
  if (logits) {
    check(*logits, torch::kFloat32, "logits", true);
    TORCH_CHECK(logits->dim() == 3 && logits->size(0) == B && logits->size(1) == T && logits->size(2) == m.NC,
                "wavenet_sample: logits must be (", B, ", ", T, ", ", m.NC, ")");
  }
  check(rings, torch::kFloat32, "rings");
  TORCH_CHECK(rings.dim() == 3 && rings.size(0) == B && rings.size(1) == m.ring_len && rings.size(2) == m.R,
              "wavenet_sample: rings must be (", B, ", ", m.ring_len, ", ", m.R, "), got ", rings.sizes());
  check(prev, torch::kInt64, "prev");
  TORCH_CHECK(prev.dim() == 1 && prev.size(0) == B, "wavenet_sample: prev must be (", B, ")");
  check(decode, torch::kFloat32, "decode");
  TORCH_CHECK(decode.numel() == m.NC, "wavenet_sample: decode table must have ", m.NC, " entries");
  TORCH_CHECK(T == 0 || (t0 >= 0 && wn::frame_of(t0 + T - 1, m.hop) < F), "wavenet_sample: ", T,
              " samples from sample ", t0, " need frame ", wn::frame_of(t0 + T - 1, m.hop), ", but feats have ", F);
  auto pv = prev.accessor<int64_t, 1>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(pv[b] >= 0 && pv[b] < m.NC, "wavenet_sample: prev[", b, "] = ", pv[b], " is not a class in [0, ", m.NC, ")");
  TORCH_CHECK(temperature >= 0, "wavenet_sample: temperature must be >= 0, got ", temperature);
  if (B == 0 || T == 0) return;

  const RunFn run = pick_kernel(isa, bf16);
  const Job job{feats.data_ptr<float>(), (long)F, uniforms.data_ptr<float>(),
                teacher ? teacher->data_ptr<int64_t>() : nullptr, rings.data_ptr<float>(), prev.data_ptr<int64_t>(),
                (long)step, (long)t0, (long)T, (float)temperature, classes.data_ptr<int64_t>(),
                wave ? wave->data_ptr<float>() : nullptr, logits ? logits->data_ptr<float>() : nullptr,
                decode.data_ptr<float>(), (long)uniforms.stride(0), teacher ? (long)teacher->stride(0) : 0,
                (long)classes.stride(0), wave ? (long)wave->stride(0) : 0, logits ? (long)logits->stride(0) : 0};
  const int want = (int)std::max<int64_t>(1, std::min<int64_t>(threads > 0 ? threads : omp_get_max_threads(), B));
  bool out_of_memory = false;
  {
    pybind11::gil_scoped_release no_gil;
#pragma omp parallel num_threads(want)
    {
      const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
      const int b0 = (int)(B * tid / nt), b1 = (int)(B * (tid + 1) / nt);
      const size_t bytes = ((Workspace::floats(m, b1 - b0) * sizeof(float) + 63) / 64) * 64;
      // zeroed: padded channels must read as 0 (their weights are 0, and 0 * garbage could be NaN)
      float* ws = b1 > b0 ? static_cast<float*>(std::aligned_alloc(64, bytes)) : nullptr;
      if (b1 > b0 && !ws) {
#pragma omp atomic write
        out_of_memory = true;
      } else if (ws) {
        std::memset(ws, 0, bytes);
        run(m, job, b0, b1, ws);
        std::free(ws);
      }
    }
  }
  TORCH_CHECK(!out_of_memory, "wavenet_sample: out of memory for the per-thread workspace");
}

}  // namespace speechmax
