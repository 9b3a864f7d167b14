// The WaveNet gate for training, fused: one pass forward, one pass backward (speechmax/models/wavenet.py's
// _ResidualStack; the torch-op twins are speechmax/ops/gated.py's gate_forward_ref / gate_backward_ref).
//
//   forward:  h (N, G) = [a | b] per row  ->  t = tanh(a), s = sigmoid(b), z = t * s    (each (N, G/2))
//   backward: g_z, t, s (N, G/2)          ->  g_h = [g_z * s * (1 - t^2) | g_z * t * s * (1 - s)]   (N, G)
//
// tanh and sigmoid go through one exp each (exp_poly: Cephes' expf polynomial, |rel. error| < 2e-7), written
// so that GCC vectorizes the loops; built for AVX2 (the portable baseline) and AVX-512F, chosen at run time.
#include <torch/extension.h>

#include <cstdint>
#include <cstring>

#include "ops.h"

namespace speechmax {
namespace {

#define SM_GATE_BODY                                                                                           \
  static inline float exp_poly(float x) {                                                                      \
    x = x < -87.0f ? -87.0f : x; /* plain selects, not fminf/floorf: they keep GCC from vectorizing */         \
    x = x > 88.0f ? 88.0f : x;                                                                                 \
    /* n = round(x / ln 2) by the 1.5 * 2^23 trick: m's low mantissa bits hold n */                             \
    const float m = __builtin_fmaf(x, 1.44269504088896341f, 12582912.0f);                                      \
    const float n = m - 12582912.0f;                                                                           \
    float r = __builtin_fmaf(n, -0.693359375f, x);                                                             \
    r = __builtin_fmaf(n, 2.12194440e-4f, r);                                                                  \
    float p = 1.9875691500e-4f;                                                                                \
    p = __builtin_fmaf(p, r, 1.3981999507e-3f);                                                                \
    p = __builtin_fmaf(p, r, 8.3334519073e-3f);                                                                \
    p = __builtin_fmaf(p, r, 4.1665795894e-2f);                                                                \
    p = __builtin_fmaf(p, r, 1.6666665459e-1f);                                                                \
    p = __builtin_fmaf(p, r, 5.0000001201e-1f);                                                                \
    p = __builtin_fmaf(p, r * r, r) + 1.0f;                                                                    \
    int32_t mi;                                                                                                \
    std::memcpy(&mi, &m, sizeof mi);                                                                           \
    const int32_t bits = (mi - 0x4B400000 + 127) << 23; /* 2^n, n in [-126, 127] after the clamp */           \
    float scale;                                                                                               \
    std::memcpy(&scale, &bits, sizeof scale);                                                                  \
    return p * scale;                                                                                          \
  }                                                                                                            \
  static void forward_rows(const float* h, float* t, float* s, float* z, int64_t r0, int64_t r1, int64_t H) {   \
    for (int64_t r = r0; r < r1; ++r) {                                                                        \
      const float* a = h + r * 2 * H;                                                                          \
      const float* b = a + H;                                                                                  \
      float* tr = t + r * H;                                                                                   \
      float* sr = s + r * H;                                                                                   \
      float* zr = z + r * H;                                                                                   \
      for (int64_t i = 0; i < H; ++i) {                                                                        \
        const float tv = 1.0f - 2.0f / (exp_poly(2.0f * a[i]) + 1.0f);                                         \
        const float sv = 1.0f / (1.0f + exp_poly(-b[i]));                                                      \
        tr[i] = tv;                                                                                            \
        sr[i] = sv;                                                                                            \
        zr[i] = tv * sv;                                                                                       \
      }                                                                                                        \
    }                                                                                                          \
  }                                                                                                            \
  static void backward_rows(const float* gz, const float* t, const float* s, float* gh, int64_t r0, int64_t r1, \
                            int64_t H) {                                                                       \
    for (int64_t r = r0; r < r1; ++r) {                                                                        \
      const float* g = gz + r * H;                                                                             \
      const float* tr = t + r * H;                                                                             \
      const float* sr = s + r * H;                                                                             \
      float* ga = gh + r * 2 * H;                                                                              \
      float* gb = ga + H;                                                                                      \
      for (int64_t i = 0; i < H; ++i) {                                                                        \
        const float gs = g[i] * sr[i];                                                                         \
        ga[i] = gs * (1.0f - tr[i] * tr[i]);                                                                   \
        gb[i] = gs * tr[i] * (1.0f - sr[i]);                                                                   \
      }                                                                                                        \
    }                                                                                                          \
  }

namespace isa_avx2 {
SM_GATE_BODY
}  // namespace isa_avx2

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace isa_avx512 {
SM_GATE_BODY
}  // namespace isa_avx512
#pragma GCC pop_options
#undef SM_GATE_BODY

using ForwardFn = void (*)(const float*, float*, float*, float*, int64_t, int64_t, int64_t);
using BackwardFn = void (*)(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t);

bool use_avx512(const std::string& isa) {
  TORCH_CHECK(isa == "auto" || isa == "avx2" || isa == "avx512", "gate_train: unknown isa '", isa,
              "' (auto, avx2, avx512)");
  const bool has = __builtin_cpu_supports("avx512f");
  TORCH_CHECK(isa != "avx512" || has, "gate_train: this CPU has no AVX-512F");
  return isa == "avx512" || (isa == "auto" && has);
}

void check(const torch::Tensor& x, const char* name, int64_t rows, int64_t cols) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.is_contiguous(), "gate_train: ",
              name, " must be a contiguous float32 CPU tensor");
  TORCH_CHECK(x.dim() == 2 && x.size(0) == rows && x.size(1) == cols, "gate_train: ", name, " must be (", rows,
              ", ", cols, "), got ", x.sizes());
}

template <typename F>
void over_rows(int64_t rows, int64_t H, F&& f) {
  pybind11::gil_scoped_release no_gil;
  const int64_t chunk = std::max<int64_t>(1, 8192 / std::max<int64_t>(H, 1));
#pragma omp parallel for schedule(static) if (rows * H > 32768)
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) f(r0, std::min(rows, r0 + chunk));
}

}  // namespace

std::vector<torch::Tensor> gate_train_forward_cpu(const torch::Tensor& h, const std::string& isa) {
  TORCH_CHECK(h.dim() == 2 && h.size(1) % 2 == 0, "gate_train: h must be (rows, even gate width), got ", h.sizes());
  const int64_t N = h.size(0), H = h.size(1) / 2;
  check(h, "h", N, 2 * H);
  auto t = torch::empty({N, H}, h.options()), s = torch::empty_like(t), z = torch::empty_like(t);
  const ForwardFn fn = use_avx512(isa) ? isa_avx512::forward_rows : isa_avx2::forward_rows;
  const float* hp = h.data_ptr<float>();
  float *tp = t.data_ptr<float>(), *sp = s.data_ptr<float>(), *zp = z.data_ptr<float>();
  over_rows(N, H, [&](int64_t r0, int64_t r1) { fn(hp, tp, sp, zp, r0, r1, H); });
  return {z, t, s};
}

void gate_train_backward_cpu(const torch::Tensor& g_z, const torch::Tensor& t, const torch::Tensor& s,
                             torch::Tensor& g_h, const std::string& isa) {
  TORCH_CHECK(g_z.dim() == 2, "gate_train: g_z must be (rows, G/2), got ", g_z.sizes());
  const int64_t N = g_z.size(0), H = g_z.size(1);
  check(g_z, "g_z", N, H);
  check(t, "t", N, H);
  check(s, "s", N, H);
  check(g_h, "g_h", N, 2 * H);
  const BackwardFn fn = use_avx512(isa) ? isa_avx512::backward_rows : isa_avx2::backward_rows;
  const float *gp = g_z.data_ptr<float>(), *tp = t.data_ptr<float>(), *sp = s.data_ptr<float>();
  float* hp = g_h.data_ptr<float>();
  over_rows(N, H, [&](int64_t r0, int64_t r1) { fn(gp, tp, sp, hp, r0, r1, H); });
}

}  // namespace speechmax
