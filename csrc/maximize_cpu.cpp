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
// maximize_math.h, which cuda/maximize.cu compiles too. The convolutions are conv_cpu_isa.h (direct) and
// maximize_cpu_isa.h (Winograd), built once for AVX2 (the portable baseline) and once for AVX-512, picked at
// run time.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "amx.h"
#include "conv_cpu.h"
#include "ops.h"

namespace speechmax {
namespace {

constexpr int kGroup = 8;  // samples per call of the decoder's first layer (latent mode)

// Winograd F(3, 3) transforms (speechmax/ops/maximize.py: _winograd_matrices).
struct Wino {
  float bt[5][5];
  float at[3][5];
};

// The packed decoder + classifier: its shape, and raw pointers into the tensors of a PackedMaximizer.
struct Net : MaximizeShape {
  long h0_stride;                 // floats per sample in the group buffers of the decoder's first layer
  Mat fc, fcT, c1[2], c1T[2], c2[2], c2T[2], c3, c3T;
  Mat stem, stemT, head, headT;
  std::vector<Mat> b1, b1T, b2, b2T, pj, pjT;
  const float* mean;              // the classifier's input normalisation (features mode)
  const float* istd;
  Wino wino;
  bool use_wino = false;
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
// layout changes: the kCpuPadRows rows around every activation are never written, so they stay zero. Pointers
// here are to row 0 of each buffer.
struct Work {
  std::vector<float> mem;
  std::vector<long> layout;
  float *h0g = nullptr, *dh0g = nullptr, *gz = nullptr, *h1 = nullptr, *dh1 = nullptr, *h2 = nullptr, *dh2 = nullptr;
  float *xn, *dxn, *gx, *pool, *dpool, *logits, *dlogits, *obj, *wd, *wm;
  const Wino* wino = nullptr;  // set when the step runs convolutions by Winograd
  std::vector<uint16_t> xb;    // bf16 precision: a convolution's input rows in bf16 (conv_bf16_isa.h)
  std::vector<float*> act;   // stem, then (mid, out) per block
  float* grad[3];

  void carve(const Net& n) {
    constexpr int kPad = kCpuPadRows;
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
#include "conv_cpu_isa.h"
#include "maximize_cpu_isa.h"
}  // namespace isa_avx2

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace isa_avx512 {
#include "conv_cpu_isa.h"
#include "maximize_cpu_isa.h"
}  // namespace isa_avx512
#pragma GCC pop_options

// bf16 precision (bf16 weights and inputs in every product, fp32 sums, fp32 everything else): by vdpbf16ps, by
// its exact emulation (for tests on CPUs without it), or on AMX tiles.
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace isa_avx512bf16_emulated {
struct V : isa_avx512::V {
  static reg dot(reg acc, reg w, reg x) { return simd::dpbf16_emulated(acc, w, x); }
};
#include "conv_cpu_isa.h"
#include "conv_bf16_isa.h"
#define SM_CONV_BF16 conv_bf16
#include "maximize_cpu_isa.h"
#undef SM_CONV_BF16
}  // namespace isa_avx512bf16_emulated
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16")
namespace isa_avx512bf16 {
struct V : isa_avx512::V {
  static reg dot(reg acc, reg w, reg x) { return simd::dpbf16(acc, w, x); }
};
#include "conv_cpu_isa.h"
#include "conv_bf16_isa.h"
#define SM_CONV_BF16 conv_bf16
#include "maximize_cpu_isa.h"
#undef SM_CONV_BF16
}  // namespace isa_avx512bf16
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,amx-tile,amx-bf16")
namespace isa_amx {
struct V : isa_avx512bf16::V {};
#include "conv_cpu_isa.h"
#include "conv_bf16_isa.h"
#include "conv_amx.h"
#define SM_CONV_BF16 conv_amx
#include "maximize_cpu_isa.h"
#undef SM_CONV_BF16
}  // namespace isa_amx
#pragma GCC pop_options

bool cpu_has_bf16_dot() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512bf16");
}


// The AMX path is built for AVX-512 with BF16 around the tiles (amx.h: the tiles and the OS's permission).
bool amx_usable() { return amx_ready() && cpu_has_bf16_dot(); }

using RunFn = void (*)(const Net&, const Job&, long, long, Work&);

// fp32 -- isa: auto (the widest this CPU has), avx512 or avx2. bf16 -- isa: auto (amx where the CPU has it
// and the OS allows it, else avx512bf16), amx, avx512bf16, or avx512bf16-emulated (tests).
RunFn pick_run(const std::string& isa, bool bf16) {
  if (!bf16) return pick_avx512(isa, "maximize_step") ? isa_avx512::run_samples : isa_avx2::run_samples;
  TORCH_CHECK(isa == "auto" || isa == "amx" || isa == "avx512bf16" || isa == "avx512bf16-emulated",
              "maximize_step: unknown bf16 isa '", isa, "'; expected auto, amx, avx512bf16 or avx512bf16-emulated");
  TORCH_CHECK(isa != "amx" || amx_usable(), "maximize_step: isa 'amx' asked for, but this CPU has no AMX-BF16 tiles",
              " (or the OS did not grant them)");
  TORCH_CHECK(isa != "avx512bf16" || cpu_has_bf16_dot(), "maximize_step: isa 'avx512bf16' asked for, but this CPU has ",
              "no AVX512-BF16");
  TORCH_CHECK(isa != "avx512bf16-emulated" || cpu_has_avx512(), "maximize_step: isa 'avx512bf16-emulated' needs AVX-512F");
  TORCH_CHECK(isa != "auto" || amx_usable() || cpu_has_bf16_dot(), "maximize_step: bf16 precision needs bf16 dot ",
              "products (AMX-BF16 or AVX512-BF16), which this CPU does not have; use fp32");
  if (isa == "amx" || (isa == "auto" && amx_usable())) return isa_amx::run_samples;
  if (isa == "avx512bf16-emulated") return isa_avx512bf16_emulated::run_samples;
  return isa_avx512bf16::run_samples;
}

void check_f32(const torch::Tensor& t, const char* name) { check_f32(t, name, "maximize_step"); }

Net make_net(const MaximizeParams& p, const torch::Tensor& weights, const torch::Tensor& desc,
             const torch::Tensor& norm, const c10::optional<torch::Tensor>& wino_weights,
             const c10::optional<torch::Tensor>& wino_desc, const c10::optional<torch::Tensor>& wino_tf,
             const c10::optional<torch::Tensor>& bf16_weights, const c10::optional<torch::Tensor>& bf16_offsets) {
  Net n;
  TORCH_CHECK(maximize_shape(p, &n), "maximize_step: params describe no network the kernel covers (", p.n_blocks,
              " blocks, at most ", kMaxBlocks, "; n_mels, n_frames, n_classes >= 1)");
  n.h0_stride = (long)(n.T0 + 2 * kCpuPadRows) * n.Cp;
  TORCH_CHECK(norm.numel() == 2L * n.M, "maximize_step: norm must be (2, ", n.M, ")");
  n.mean = norm.data_ptr<float>();
  n.istd = n.mean + n.M;

  const float* w = weights.data_ptr<float>();
  const int64_t* d = desc.data_ptr<int64_t>();
  const int nmat = (int)desc.size(0);
  const bool bf16 = bf16_weights.has_value();
  const uint16_t* wb = nullptr;
  const int64_t* wbo = nullptr;
  if (bf16) {
    TORCH_CHECK(bf16_weights->device().is_cpu() && bf16_weights->scalar_type() == torch::kBFloat16 &&
                bf16_weights->is_contiguous(), "maximize_step: bf16_weights must be a contiguous bfloat16 CPU tensor");
    TORCH_CHECK(bf16_offsets.has_value() && bf16_offsets->scalar_type() == torch::kInt64 &&
                bf16_offsets->is_contiguous() && bf16_offsets->numel() == nmat,
                "maximize_step: bf16_offsets must be (", nmat, ",) int64 beside bf16_weights");
    wb = reinterpret_cast<const uint16_t*>(bf16_weights->data_ptr<at::BFloat16>());
    wbo = bf16_offsets->data_ptr<int64_t>();
  }
  // Winograd is an fp32 path: in bf16 precision every product is a bf16 one
  n.use_wino = !bf16 && wino_weights.has_value() && wino_desc.has_value() && wino_tf.has_value();
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
    if (wb && wbo[next] >= 0) {  // offset -1: this matrix stays fp32
      const int64_t need = (int64_t)m.taps * round_up(m.cin, kBf16K) * round_up(m.coutp, kBf16N);
      TORCH_CHECK(wbo[next] + need <= bf16_weights->numel(), "maximize_step: bf16 matrix ", next,
                  " lies outside bf16_weights");
      m.wb = wb + wbo[next];
    }
    ++next;
    TORCH_CHECK(m.pad <= kMaxConvPad, "maximize_step: padding ", m.pad, " exceeds ", kMaxConvPad);
    TORCH_CHECK(m.coutp % kChannelAlign == 0, "maximize_step: outputs must be padded to ", kChannelAlign);
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

}  // namespace

std::vector<std::string> maximize_cpu_isas() {
  std::vector<std::string> isas{"avx2"};
  if (cpu_has_avx512()) isas.insert(isas.end(), {"avx512", "avx512bf16-emulated"});
  if (cpu_has_bf16_dot()) isas.push_back("avx512bf16");
  if (amx_usable()) isas.push_back("amx");
  return isas;
}

void maximize_step_cpu(const MaximizeParams& p, const torch::Tensor& weights, const torch::Tensor& desc,
                       const torch::Tensor& norm, torch::Tensor& x, const torch::Tensor& targets,
                       torch::Tensor& obj_out, const c10::optional<torch::Tensor>& grad_out,
                       const c10::optional<torch::Tensor>& adam_m, const c10::optional<torch::Tensor>& adam_v,
                       int64_t threads, const std::string& isa, const c10::optional<torch::Tensor>& wino_weights,
                       const c10::optional<torch::Tensor>& wino_desc, const c10::optional<torch::Tensor>& wino_tf,
                       const c10::optional<torch::Tensor>& bf16_weights,
                       const c10::optional<torch::Tensor>& bf16_offsets) {
  check_f32(weights, "weights");
  check_f32(norm, "norm");
  check_f32(x, "x");
  check_f32(obj_out, "objective");
  check_desc(desc, "maximize_step");
  TORCH_CHECK(targets.scalar_type() == torch::kInt64 && targets.is_contiguous(), "maximize_step: targets must be int64");
  Net n = make_net(p, weights, desc, norm, wino_weights, wino_desc, wino_tf, bf16_weights, bf16_offsets);
  const long B = x.size(0);
  const long nvar = B ? x.numel() / B : 0;
  TORCH_CHECK(nvar == (n.latent ? n.L : (long)n.M * n.T), "maximize_step: x has ", nvar,
              " elements per sample, the packed model expects ", n.latent ? n.L : (long)n.M * n.T);
  TORCH_CHECK(targets.numel() == B && obj_out.numel() == B, "maximize_step: targets and objective must have ", B,
              " entries");
  TORCH_CHECK(p.objective >= 0 && p.objective <= 2 && p.level >= 0 && p.level <= n.nb + 2,
              "maximize_step: bad objective");
  const int64_t* tg = targets.data_ptr<int64_t>();
  for (long s = 0; s < B; ++s)
    TORCH_CHECK(p.objective == mx::kUnit || (tg[s] >= 0 && tg[s] < n.NC), "maximize_step: target ", tg[s],
                " out of range [0, ", n.NC, ")");
  Job job;
  job.x = x.data_ptr<float>(), job.nvar = nvar, job.targets = tg;
  job.objective = p.objective, job.level = p.level, job.unit = p.unit, job.optimizer = p.optimizer;
  job.lr = (float)p.lr, job.l2 = (float)p.l2, job.beta1 = (float)p.beta1, job.beta2 = (float)p.beta2;
  job.eps = (float)p.eps;
  job.c1 = (float)(1.0 - std::pow(p.beta1, (double)p.adam_step));
  job.c2 = (float)(1.0 - std::pow(p.beta2, (double)p.adam_step));
  job.m = job.v = nullptr;
  if (p.optimizer == mx::kAdam && p.update) {
    TORCH_CHECK(adam_m.has_value() && adam_v.has_value() && p.adam_step >= 1,
                "maximize_step: Adam needs m, v and adam_step >= 1");
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
  job.update = p.update;
  const RunFn run = pick_run(isa, bf16_weights.has_value());
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
