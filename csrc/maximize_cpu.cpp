// Fused activation-maximization step on the CPU: for a batch of latents (through the VAE's frame-wise conv
// decoder) or of log-mel features, run the tcres classifier forward, take the gradient of the objective
// (class probability, logit, or a hidden unit's mean activation) back to the input, and apply the ascent
// update in place -- all in one call, the GIL released, OpenMP over samples.
//
// The "fully fused MLP" idea (tiny-cuda-nn), on a CPU: each thread carries one sample at a time through
// forward and backward with every activation in a per-thread scratch buffer (~0.7 MB at the default shapes,
// L2-resident), instead of writing whole-batch tensors to memory between layers as autograd does. Batch
// norm, the prior's de-normalisation and the classifier's input normalisation are folded into the packed
// weights by speechmax/ops/maximize.py; the per-element math (objective gradient, update rules) is
// maximize_math.h, which cuda/maximize.cu compiles too. The convolution microkernels are
// maximize_cpu_isa.h, built once for AVX2 (the portable baseline) and once for AVX-512, picked at run time.
#include <torch/extension.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "maximize_math.h"
#include "ops.h"
#include "simd.h"

namespace speechmax {
namespace {

constexpr int kPanel = 32;    // outputs per weight panel (speechmax/ops/maximize.py packs with the same width)
constexpr int kMaxTile = 12;  // output rows per microkernel call at most
constexpr int kGroup = 8;     // samples per call of the decoder's first layer (latent mode)
constexpr int kPad = 8;       // zero rows before and after every activation (>= what any conv reads past its rows)
constexpr int kDescCols = 6;  // per matrix: weight offset, bias offset (-1: none), cin, coutp, taps, pad

int pad16(int n) { return (n + 15) / 16 * 16; }

// A packed convolution: weights in panels (see maximize_cpu_isa.h), bias padded to coutp (or null).
struct Mat {
  const float* w = nullptr;
  const float* b = nullptr;
  int cin = 0, coutp = 0, taps = 0, pad = 0;
  const float* ww = nullptr;  // Winograd weights: 5 blocks (one per transform point) of S-tap panels, or null
  int S = 0;
  long astride = 0;
};

// Winograd F(3, 3) transforms (speechmax/ops/maximize.py: _winograd_matrices).
struct Wino {
  float bt[5][5];
  float at[3][5];
};

// The packed decoder + classifier, as raw pointers into the tensors of a PackedMaximizer.
struct Net {
  bool latent;
  int L, Lp, C, Cp, C2, C2p, T0, M, Mp, T, nb, NC, NCp, cmp;
  long h0_stride;                 // floats per sample in the group buffers of the decoder's first layer
  std::vector<int> ch;            // stem + block output channels
  std::vector<char> proj;         // block i has a 1x1 projection on its shortcut
  Mat fc, fcT, c1[2], c1T[2], c2[2], c2T[2], c3, c3T;
  Mat stem, stemT, head, headT;
  std::vector<Mat> b1, b1T, b2, b2T, pj, pjT;
  const float* mean;              // the classifier's input normalisation (features mode)
  const float* istd;
  Wino wino;
  bool use_wino = false;
};

// The paper prior's 2-D decoder after its linear layer (decoder2d_isa.h; speechmax/ops/decoder2d.py packs it).
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

// One step for a batch: what to climb, how to step, where the results go.
struct Job {
  float* x;                 // (B, nvar) latents or log-mel (B, M, T), updated in place
  long nvar;
  const int64_t* targets;   // (B,)
  int objective, level, unit;
  int optimizer;
  float lr, l2, beta1, beta2, eps, c1, c2;
  float* m;                 // Adam state (B, nvar) or null
  float* v;
  float* obj_out;           // (B,) objective before the step; NaN where the step was refused
  float* grad_out;          // (B, nvar) gradient of objective - penalties, or null
  bool update;
};

// Per-thread scratch, kept between calls (threads are OpenMP's persistent pool) and zeroed only when the
// layout changes: the kPad rows around every activation are never written, so they stay zero. Pointers
// here are to row 0 of each buffer.
struct Work {
  std::vector<float> mem;
  std::vector<long> layout;
  float *h0g = nullptr, *dh0g = nullptr, *gz = nullptr, *h1 = nullptr, *dh1 = nullptr, *h2 = nullptr, *dh2 = nullptr;
  float *xn, *dxn, *gx, *pool, *dpool, *logits, *dlogits, *obj, *wd, *wm;
  const Wino* wino = nullptr;  // set when the step runs convolutions by Winograd
  std::vector<float*> act;   // stem, then (mid, out) per block
  float* grad[3];

  void carve(const Net& n) {
    const long rows = std::max(n.T, n.latent ? 4 * n.T0 : 0) + 2 * kPad;
    struct Slot { float** ptr; long floats, lead; };
    std::vector<Slot> slots;
    act.assign(1 + 2 * n.nb, nullptr);
    auto act_slot = [&](float** p, long ld) { slots.push_back({p, rows * ld, (long)kPad * ld}); };
    if (n.latent) {
      slots.push_back({&h0g, kGroup * n.h0_stride, 0});
      slots.push_back({&dh0g, kGroup * n.h0_stride, 0});
      slots.push_back({&gz, (long)kGroup * n.Lp, 0});
      for (float** p : {&h1, &dh1}) slots.push_back({p, (2L * n.T0 + 2 * kPad) * n.Cp, (long)kPad * n.Cp});
      for (float** p : {&h2, &dh2}) slots.push_back({p, (4L * n.T0 + 2 * kPad) * n.C2p, (long)kPad * n.C2p});
    }
    act_slot(&xn, n.Mp);
    act_slot(&dxn, n.Mp);
    for (auto& p : act) act_slot(&p, n.cmp);
    for (auto& p : grad) act_slot(&p, n.cmp);
    slots.push_back({&gx, (long)n.M * n.T, 0});
    for (float** p : {&pool, &dpool}) slots.push_back({p, (long)n.cmp, 0});
    for (float** p : {&logits, &dlogits}) slots.push_back({p, (long)n.NCp, 0});
    slots.push_back({&obj, (long)kGroup, 0});
    const long tiles = (rows + 2) / 3 + 4;
    const long cw = std::max(std::max(n.Cp, n.C2p), std::max(n.Mp, n.cmp));
    slots.push_back({&wd, 5 * tiles * cw, 0});
    slots.push_back({&wm, 5 * tiles * cw, 0});
    wino = n.use_wino ? &n.wino : nullptr;
    std::vector<long> want{n.latent, n.L, n.Cp, n.C2p, n.T0, n.Mp, n.T, n.nb, n.NCp, n.cmp};
    long total = 16;  // room to align the base to 64 bytes
    for (auto& s : slots) total += (s.floats + 15) / 16 * 16;
    if (want != layout || (long)mem.size() < total) {
      mem.assign(total, 0.0f);
      layout = want;
    }
    float* p = mem.data();
    p += (16 - ((uintptr_t)p / sizeof(float)) % 16) % 16;
    for (auto& s : slots) {
      *s.ptr = p + s.lead;
      p += (s.floats + 15) / 16 * 16;
    }
  }
};

// The update of one sample from its gradient g (nvar): rms-normalised or Adam, in place. A non-finite
// objective or gradient leaves the sample (and its Adam state) untouched and reports NaN.
void finish_sample(const Job& job, long s, float obj, const float* g) {
  const long nv = job.nvar;
  double sumsq = 0;
  for (long k = 0; k < nv; ++k) sumsq += (double)g[k] * g[k];
  if (job.grad_out) std::memcpy(job.grad_out + s * nv, g, nv * sizeof(float));
  const bool ok = std::isfinite(obj) && std::isfinite(sumsq);
  job.obj_out[s] = ok ? obj : NAN;
  if (!ok || !job.update) return;
  float* x = job.x + s * nv;
  if (job.optimizer == mx::kRmsNormalized) {
    const float scale = mx::rms_step_scale(sumsq, (int)nv, job.lr);
    for (long k = 0; k < nv; ++k) x[k] += scale * g[k];
  } else {
    float* m = job.m + s * nv;
    float* v = job.v + s * nv;
    for (long k = 0; k < nv; ++k)
      x[k] += mx::adam_delta(g[k], m + k, v + k, job.beta1, job.beta2, job.c1, job.c2, job.eps, job.lr);
  }
}

namespace isa_avx2 {
struct V : simd::Avx2 {
  static constexpr int NREG = 16;
  static reg relu(reg a) { return _mm256_max_ps(_mm256_setzero_ps(), a); }  // NaN in a -> NaN (mx::relu)
  static reg keep_where_positive(reg a, reg m) {
    return _mm256_and_ps(a, _mm256_cmp_ps(m, _mm256_setzero_ps(), _CMP_GT_OQ));
  }
};
#include "maximize_cpu_isa.h"
#include "decoder2d_isa.h"
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
#include "maximize_cpu_isa.h"
#include "decoder2d_isa.h"
}  // namespace isa_avx512
#pragma GCC pop_options

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}

using RunFn = void (*)(const Net&, const Job&, long, long, Work&);

bool pick_avx512(const std::string& isa, const char* op) {
  const bool has512 = cpu_has_avx512();
  TORCH_CHECK(isa == "auto" || isa == "avx512" || isa == "avx2", op, ": unknown isa '", isa,
              "'; expected auto, avx512 or avx2");
  TORCH_CHECK(isa != "avx512" || has512, op, ": isa 'avx512' asked for, but this CPU has no AVX-512F");
  return isa == "avx512" || (isa == "auto" && has512);
}

RunFn pick_run(const std::string& isa) {
  return pick_avx512(isa, "maximize_step") ? isa_avx512::run_samples : isa_avx2::run_samples;
}

void check_f32(const torch::Tensor& t, const char* name, const char* op = "maximize_step") {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(),
              op, ": ", name, " must be a contiguous float32 CPU tensor, got ", t.scalar_type(),
              t.is_contiguous() ? "" : " (not contiguous)");
}

// dims: latent?, L, C, C2, T0, M, T, nb, NC, then nb + 1 channel counts, then nb projection flags.
Net make_net(const torch::Tensor& weights, const torch::Tensor& desc, const std::vector<int64_t>& dims,
             const torch::Tensor& norm, const c10::optional<torch::Tensor>& wino_weights,
             const c10::optional<torch::Tensor>& wino_desc, const c10::optional<torch::Tensor>& wino_tf) {
  TORCH_CHECK(dims.size() >= 9, "maximize_step: dims too short");
  Net n;
  n.latent = dims[0] != 0;
  n.L = (int)dims[1], n.C = (int)dims[2], n.C2 = (int)dims[3], n.T0 = (int)dims[4];
  n.M = (int)dims[5], n.T = (int)dims[6], n.nb = (int)dims[7], n.NC = (int)dims[8];
  TORCH_CHECK((int64_t)dims.size() == 9 + 2 * n.nb + 1, "maximize_step: dims has ", dims.size(), " entries for ",
              n.nb, " blocks");
  n.Lp = pad16(n.L), n.Cp = pad16(n.C), n.C2p = pad16(n.C2), n.Mp = pad16(n.M), n.NCp = pad16(n.NC);
  n.ch.assign(dims.begin() + 9, dims.begin() + 10 + n.nb);
  n.proj.assign(dims.begin() + 10 + n.nb, dims.end());
  n.cmp = 0;
  for (int c : n.ch) n.cmp = std::max(n.cmp, pad16(c));
  n.h0_stride = (long)(n.T0 + 2 * kPad) * n.Cp;
  n.mean = norm.data_ptr<float>();
  n.istd = n.mean + n.M;

  const float* w = weights.data_ptr<float>();
  const int64_t* d = desc.data_ptr<int64_t>();
  const int nmat = (int)desc.size(0);
  n.use_wino = wino_weights.has_value() && wino_desc.has_value() && wino_tf.has_value();
  const float* ww = nullptr;
  const int64_t* wd = nullptr;
  if (n.use_wino) {
    check_f32(*wino_weights, "wino_weights");
    check_f32(*wino_tf, "wino_tf");
    TORCH_CHECK(wino_tf->numel() == 40, "maximize_step: wino_tf must hold BT (5x5) and AT (3x5)");
    TORCH_CHECK(wino_desc->scalar_type() == torch::kInt64 && wino_desc->is_contiguous() && wino_desc->dim() == 2 &&
                wino_desc->size(0) == nmat && wino_desc->size(1) == 3, "maximize_step: wino_desc must be (", nmat, ", 3) int64");
    ww = wino_weights->data_ptr<float>();
    wd = wino_desc->data_ptr<int64_t>();
    std::memcpy(&n.wino, wino_tf->data_ptr<float>(), sizeof(Wino));
  }
  int next = 0;
  auto take = [&]() {
    TORCH_CHECK(next < nmat, "maximize_step: desc has too few matrices");
    const int64_t* r = d + kDescCols * next;
    Mat m;
    m.w = w + r[0];
    m.b = r[1] >= 0 ? w + r[1] : nullptr;
    m.cin = (int)r[2], m.coutp = (int)r[3], m.taps = (int)r[4], m.pad = (int)r[5];
    if (ww && wd[3 * next] >= 0) m.ww = ww + wd[3 * next], m.S = (int)wd[3 * next + 1], m.astride = wd[3 * next + 2];
    ++next;
    TORCH_CHECK(m.pad <= kPad, "maximize_step: padding ", m.pad, " exceeds ", kPad);
    TORCH_CHECK(m.coutp % 16 == 0, "maximize_step: outputs must be padded to 16");
    return m;
  };
  if (n.latent) {
    n.fc = take(), n.fcT = take();
    for (auto* pair : {n.c1, n.c1T, n.c2, n.c2T}) pair[0] = take(), pair[1] = take();
    n.c3 = take(), n.c3T = take();
  }
  n.stem = take(), n.stemT = take();
  for (int i = 0; i < n.nb; ++i) {
    n.b1.push_back(take()), n.b1T.push_back(take()), n.b2.push_back(take()), n.b2T.push_back(take());
    n.pj.push_back(n.proj[i] ? take() : Mat()), n.pjT.push_back(n.proj[i] ? take() : Mat());
  }
  n.head = take(), n.headT = take();
  TORCH_CHECK(next == nmat, "maximize_step: desc has ", nmat, " matrices, the architecture uses ", next);
  return n;
}

using Dec2dFn = void (*)(const Dec2d&, const Dec2dJob&, long, long, std::vector<float>&);

// dims: H0, W0, layers, M, T, then layers + 1 channel counts; desc: per layer its forward and transposed
// matrix (rows as maximize_step's); affine: (2, M) scale and shift.
Dec2d make_dec2d(const torch::Tensor& weights, const torch::Tensor& desc, const std::vector<int64_t>& dims,
                 const torch::Tensor& affine) {
  check_f32(weights, "weights", "decoder2d");
  check_f32(affine, "affine", "decoder2d");
  TORCH_CHECK(dims.size() >= 6 && (int64_t)dims.size() == 6 + dims[2], "decoder2d: dims must be H0, W0, layers, "
              "M, T and layers + 1 channel counts");
  Dec2d d;
  d.H0 = (int)dims[0], d.W0 = (int)dims[1], d.nl = (int)dims[2], d.M = (int)dims[3], d.T = (int)dims[4];
  d.ch.assign(dims.begin() + 5, dims.end());
  TORCH_CHECK(d.nl >= 1 && d.H0 >= 1 && d.W0 >= 1 && d.ch.back() == 1, "decoder2d: needs >= 1 layer and a "
              "1-channel output");
  for (int l = 0; l < d.nl; ++l)
    TORCH_CHECK(d.ch[l] >= 16 && d.ch[l] % 16 == 0, "decoder2d: channels must be multiples of 16, got ", d.ch[l]);
  TORCH_CHECK(d.M >= 1 && d.T >= 1 && d.M <= (d.H0 << d.nl) && d.T <= (d.W0 << d.nl), "decoder2d: crop ", d.M,
              " x ", d.T, " exceeds the output");
  TORCH_CHECK(affine.numel() == 2L * d.M, "decoder2d: affine must be (2, ", d.M, ")");
  TORCH_CHECK(desc.scalar_type() == torch::kInt64 && desc.is_contiguous() && desc.dim() == 2 &&
              desc.size(0) == 2 * d.nl && desc.size(1) == kDescCols, "decoder2d: desc must be (", 2 * d.nl, ", 6) int64");
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
                m.coutp == (fwd ? pad16(16 * cout) : cin) && (m.b != nullptr) == fwd &&
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

void decoder2d_forward_cpu(const torch::Tensor& weights, const torch::Tensor& desc, const std::vector<int64_t>& dims,
                           const torch::Tensor& affine, const torch::Tensor& h0, torch::Tensor& feats,
                           const c10::optional<torch::Tensor>& acts, int64_t threads, const std::string& isa) {
  const Dec2d d = make_dec2d(weights, desc, dims, affine);
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

void decoder2d_backward_cpu(const torch::Tensor& weights, const torch::Tensor& desc, const std::vector<int64_t>& dims,
                            const torch::Tensor& affine, const torch::Tensor& h0, const torch::Tensor& acts,
                            const torch::Tensor& gf, torch::Tensor& g_h0, int64_t threads, const std::string& isa) {
  const Dec2d d = make_dec2d(weights, desc, dims, affine);
  const long B = h0.size(0);
  check_rows(h0, "h0", B, (long)d.H0 * d.W0 * d.ch[0]);
  check_rows(acts, "acts", B, d.acts_floats);
  check_rows(gf, "gf", B, (long)d.M * d.T);
  check_rows(g_h0, "g_h0", B, (long)d.H0 * d.W0 * d.ch[0]);
  Dec2dJob job{true, h0.data_ptr<float>(), acts.data_ptr<float>(), nullptr, gf.data_ptr<float>(), g_h0.data_ptr<float>()};
  run_dec2d(d, job, B, threads, isa);
}


std::vector<std::string> maximize_cpu_isas() {
  return cpu_has_avx512() ? std::vector<std::string>{"avx2", "avx512"} : std::vector<std::string>{"avx2"};
}

void maximize_step_cpu(const torch::Tensor& weights, const torch::Tensor& desc, const std::vector<int64_t>& dims,
                       const torch::Tensor& norm, torch::Tensor& x, const torch::Tensor& targets, int64_t objective,
                       int64_t level, int64_t unit, int64_t optimizer, double lr, double l2,
                       const c10::optional<torch::Tensor>& adam_m, const c10::optional<torch::Tensor>& adam_v,
                       int64_t adam_step, double beta1, double beta2, double eps, torch::Tensor& obj_out,
                       const c10::optional<torch::Tensor>& grad_out, bool update, int64_t threads,
                       const std::string& isa, const c10::optional<torch::Tensor>& wino_weights,
                       const c10::optional<torch::Tensor>& wino_desc, const c10::optional<torch::Tensor>& wino_tf) {
  check_f32(weights, "weights");
  check_f32(norm, "norm");
  check_f32(x, "x");
  check_f32(obj_out, "objective");
  TORCH_CHECK(desc.scalar_type() == torch::kInt64 && desc.is_contiguous() && desc.dim() == 2 &&
              desc.size(1) == kDescCols, "maximize_step: desc must be (n, 6) int64");
  TORCH_CHECK(targets.scalar_type() == torch::kInt64 && targets.is_contiguous(), "maximize_step: targets must be int64");
  Net n = make_net(weights, desc, dims, norm, wino_weights, wino_desc, wino_tf);
  const long B = x.size(0);
  const long nvar = B ? x.numel() / B : 0;
  TORCH_CHECK(nvar == (n.latent ? n.L : (long)n.M * n.T), "maximize_step: x has ", nvar,
              " elements per sample, the packed model expects ", n.latent ? n.L : (long)n.M * n.T);
  TORCH_CHECK(targets.numel() == B && obj_out.numel() == B, "maximize_step: targets and objective must have ", B,
              " entries");
  TORCH_CHECK(objective >= 0 && objective <= 2 && level >= 0 && level <= n.nb + 2, "maximize_step: bad objective");
  const int64_t* tg = targets.data_ptr<int64_t>();
  for (long s = 0; s < B; ++s)
    TORCH_CHECK(objective == mx::kUnit || (tg[s] >= 0 && tg[s] < n.NC), "maximize_step: target ", tg[s],
                " out of range [0, ", n.NC, ")");
  Job job;
  job.x = x.data_ptr<float>(), job.nvar = nvar, job.targets = tg;
  job.objective = (int)objective, job.level = (int)level, job.unit = (int)unit, job.optimizer = (int)optimizer;
  job.lr = (float)lr, job.l2 = (float)l2, job.beta1 = (float)beta1, job.beta2 = (float)beta2, job.eps = (float)eps;
  job.c1 = (float)(1.0 - std::pow(beta1, (double)adam_step));
  job.c2 = (float)(1.0 - std::pow(beta2, (double)adam_step));
  job.m = job.v = nullptr;
  if (optimizer == mx::kAdam && update) {
    TORCH_CHECK(adam_m.has_value() && adam_v.has_value() && adam_step >= 1, "maximize_step: Adam needs m, v and step >= 1");
    check_f32(*adam_m, "adam m");
    check_f32(*adam_v, "adam v");
    TORCH_CHECK(adam_m->numel() == x.numel() && adam_v->numel() == x.numel(), "maximize_step: Adam state must match x");
    job.m = adam_m->data_ptr<float>(), job.v = adam_v->data_ptr<float>();
  }
  job.obj_out = obj_out.data_ptr<float>();
  job.grad_out = nullptr;
  if (grad_out.has_value()) {
    check_f32(*grad_out, "grad");
    TORCH_CHECK(grad_out->numel() == x.numel(), "maximize_step: grad must match x");
    job.grad_out = grad_out->data_ptr<float>();
  }
  job.update = update;
  const RunFn run = pick_run(isa);
  if (B == 0) return;
  pybind11::gil_scoped_release no_gil;
  // Samples are handed out dynamically -- single ones in features mode, groups of up to kGroup in latent mode
  // (the decoder's first layer runs per group) -- since on these shared cores one thread is often slowed by
  // another process, and a static split would make the whole step wait for it.
  const int t_max = (int)std::max<int64_t>(1, threads);
  const long per = std::max<long>(1, std::min<long>(n.latent ? kGroup : 1, (B + t_max - 1) / t_max));
  const long groups = (B + per - 1) / per;
  const int want = (int)std::min<long>(t_max, groups);
#pragma omp parallel num_threads(want)
  {
    static thread_local Work work;
    work.carve(n);
#pragma omp for schedule(dynamic, 1)
    for (long g = 0; g < groups; ++g) run(n, job, g * per, std::min(B, (g + 1) * per), work);
  }
}

}  // namespace speechmax
