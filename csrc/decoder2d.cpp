// The seed paper's 2-D decoder prior after its linear layer (prior arch "paper": ConvTranspose2d(4, 2, 1) layers
// with ReLU between them) on the CPU, forward and vector-Jacobian product, for latent-mode maximization through
// that prior: one sample at a time with its activations in cache (OpenMP over samples, the GIL released),
// instead of batch-wide tensors between autograd ops. speechmax/ops/decoder2d.py packs the weights and
// documents shapes; the per-sample algorithm is decoder2d_isa.h on the convolution microkernel of
// conv_cpu_isa.h, built once for AVX2 (the portable baseline) and once for AVX-512, picked at run time.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "conv_cpu.h"
#include "ops.h"

namespace speechmax {
namespace {

struct Dec2d {
  int H0, W0, nl, M, T;            // input image, layers, the crop (mel rows, frames)
  std::vector<int> ch;             // channels: input, then per layer (the last is 1)
  std::vector<Mat> fwd, bwd;       // per layer: input -> 16 kernel positions x Cout (bias: the layer's), transpose
  std::vector<long> act_off;       // per intermediate layer: offset of its output in a sample's activations
  long acts_floats = 0, cols_floats = 0, gbuf_floats = 0;
  const float* scale;              // (M) the prior's de-normalisation: feats = out * scale + shift
  const float* shift;
};

struct Dec2dJob {
  bool backward;
  const float* h0;    // (B, H0 W0 C0) post-ReLU input image
  float* acts;        // (B, acts_floats) or null (forward: written; backward: read)
  float* feats;       // forward: (B, M, T)
  const float* gf;    // backward: (B, M, T)
  float* g_h0;        // backward: (B, H0 W0 C0)
};

namespace isa_avx2 {
#include "conv_cpu_isa.h"
#include "decoder2d_isa.h"
}  // namespace isa_avx2

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace isa_avx512 {
#include "conv_cpu_isa.h"
#include "decoder2d_isa.h"
}  // namespace isa_avx512
#pragma GCC pop_options

using Dec2dFn = void (*)(const Dec2d&, const Dec2dJob&, long, long, std::vector<float>&);

// desc: per layer its forward and transposed matrix (kDescCols columns, as maximize_step's); affine: (2, M)
// scale and shift.
Dec2d make_dec2d(const Decoder2dParams& p, const torch::Tensor& weights, const torch::Tensor& desc,
                 const torch::Tensor& affine) {
  check_f32(weights, "weights", "decoder2d");
  check_f32(affine, "affine", "decoder2d");
  Dec2d d;
  d.H0 = p.height, d.W0 = p.width, d.nl = p.n_layers, d.M = p.n_mels, d.T = p.n_frames;
  TORCH_CHECK(d.nl >= 1 && d.nl <= kMaxDecoder2dLayers && d.H0 >= 1 && d.W0 >= 1, "decoder2d: params must have 1 to ",
              kMaxDecoder2dLayers, " layers and a positive image size, got ", d.nl, " layers of ", d.H0, " x ", d.W0);
  d.ch.assign(p.channels, p.channels + d.nl + 1);
  TORCH_CHECK(d.ch.back() == 1, "decoder2d: needs a 1-channel output, got ", d.ch.back());
  for (int l = 0; l < d.nl; ++l)
    TORCH_CHECK(d.ch[l] >= kChannelAlign && d.ch[l] % kChannelAlign == 0, "decoder2d: channels must be multiples of ",
                kChannelAlign, ", got ", d.ch[l]);
  TORCH_CHECK(d.M >= 1 && d.T >= 1 && d.M <= (d.H0 << d.nl) && d.T <= (d.W0 << d.nl), "decoder2d: crop ", d.M,
              " x ", d.T, " exceeds the output");
  TORCH_CHECK(affine.numel() == 2L * d.M, "decoder2d: affine must be (2, ", d.M, ")");
  check_desc(desc, "decoder2d");
  TORCH_CHECK(desc.size(0) == 2 * d.nl, "decoder2d: desc must have ", 2 * d.nl, " rows (2 per layer)");
  d.scale = affine.data_ptr<float>(), d.shift = d.scale + d.M;
  const float* w = weights.data_ptr<float>();
  const int64_t* r = desc.data_ptr<int64_t>();
  for (int i = 0; i < 2 * d.nl; ++i, r += kDescCols) {
    const int l = i / 2, cin = d.ch[l], cout = d.ch[l + 1];
    const bool fwd = i % 2 == 0;
    Mat m;
    m.w = w + r[0], m.b = r[1] >= 0 ? w + r[1] : nullptr;
    m.cin = (int)r[2], m.coutp = (int)r[3], m.taps = (int)r[4], m.pad = (int)r[5];
    TORCH_CHECK(m.taps == 1 && m.pad == 0 && m.cin == (fwd ? cin : 16 * cout) &&
                m.coutp == (fwd ? align_channels(16 * cout) : cin) && (m.b != nullptr) == fwd &&
                r[0] >= 0 && r[0] + (int64_t)m.cin * m.coutp <= weights.numel() &&
                (!fwd || r[1] + m.coutp <= weights.numel()),
                "decoder2d: desc row ", i, " does not match layer ", l);
    (fwd ? d.fwd : d.bwd).push_back(m);
  }
  long H = d.H0, W = d.W0;
  for (int l = 0; l < d.nl; ++l) {
    d.cols_floats = std::max(d.cols_floats, H * W * 16 * d.ch[l + 1]);
    H *= 2, W *= 2;
    if (l + 1 < d.nl) {
      d.act_off.push_back(d.acts_floats);
      d.acts_floats += H * W * d.ch[l + 1];
      d.gbuf_floats = std::max(d.gbuf_floats, H * W * d.ch[l + 1]);
    }
  }
  return d;
}

void check_rows(const torch::Tensor& t, const char* name, long B, long per) {
  check_f32(t, name, "decoder2d");
  TORCH_CHECK(t.dim() >= 1 && t.size(0) == B && t.numel() == B * per, "decoder2d: ", name, " must hold ", B,
              " rows of ", per, " floats, got ", t.sizes());
}

void run_dec2d(const Dec2d& d, const Dec2dJob& job, long B, int64_t threads, const std::string& isa) {
  const Dec2dFn fn = pick_avx512(isa, "decoder2d") ? isa_avx512::dec2d_run : isa_avx2::dec2d_run;
  if (B == 0) return;
  pybind11::gil_scoped_release no_gil;
  const int want = (int)std::min<long>(std::max<int64_t>(1, threads), B);
#pragma omp parallel num_threads(want)
  {
    static thread_local std::vector<float> scratch;
#pragma omp for schedule(dynamic, 1)
    for (long s = 0; s < B; ++s) fn(d, job, s, s + 1, scratch);
  }
}

}  // namespace

void decoder2d_forward_cpu(const Decoder2dParams& p, const torch::Tensor& weights, const torch::Tensor& desc,
                           const torch::Tensor& affine, const torch::Tensor& h0, torch::Tensor& feats,
                           const c10::optional<torch::Tensor>& acts, int64_t threads, const std::string& isa) {
  const Dec2d d = make_dec2d(p, weights, desc, affine);
  const long B = h0.size(0);
  check_rows(h0, "h0", B, (long)d.H0 * d.W0 * d.ch[0]);
  check_rows(feats, "feats", B, (long)d.M * d.T);
  Dec2dJob job{false, h0.data_ptr<float>(), nullptr, feats.data_ptr<float>(), nullptr, nullptr};
  if (acts.has_value()) {
    check_rows(*acts, "acts", B, d.acts_floats);
    job.acts = acts->data_ptr<float>();
  }
  run_dec2d(d, job, B, threads, isa);
}

void decoder2d_backward_cpu(const Decoder2dParams& p, const torch::Tensor& weights, const torch::Tensor& desc,
                            const torch::Tensor& affine, const torch::Tensor& h0, const torch::Tensor& acts,
                            const torch::Tensor& gf, torch::Tensor& g_h0, int64_t threads, const std::string& isa) {
  const Dec2d d = make_dec2d(p, weights, desc, affine);
  const long B = h0.size(0);
  check_rows(h0, "h0", B, (long)d.H0 * d.W0 * d.ch[0]);
  check_rows(acts, "acts", B, d.acts_floats);
  check_rows(gf, "gf", B, (long)d.M * d.T);
  check_rows(g_h0, "g_h0", B, (long)d.H0 * d.W0 * d.ch[0]);
  Dec2dJob job{true, h0.data_ptr<float>(), acts.data_ptr<float>(), nullptr, gf.data_ptr<float>(), g_h0.data_ptr<float>()};
  run_dec2d(d, job, B, threads, isa);
}

}  // namespace speechmax
