// The machine's arithmetic peak, measured by the project itself: independent FMA chains in registers, fp32 and
// -- where the CPU has AVX512-BF16 -- bf16 dot products (vdpbf16ps), on 1..N threads. torch's sgemm is not a
// roofline (on Zen 5 it reaches about half of what the FMA units do), so the benches state every efficiency
// against this figure instead.
//
// FLOPs are counted per fp32 lane of one instruction: an fp32 FMA (acc += x*y) is 2 (a multiply and an add),
// so 32 per zmm; a vdpbf16ps (acc += x0*y0 + x1*y1 over a bf16 pair) is 4 (2 multiplies, 2 adds), so 64 per
// zmm. AMX tiles (kind amx_bf16, where the CPU has them and the OS grants them): 6 accumulator tiles of 16 x 16
// fp32, each step one TDPBF16PS per tile with the same A (16 x 32 bf16) and B (32 x 16) -- 32 products and 32
// adds per fp32 element, 64 FLOPs a lane.
//
// Each kind runs on the widest instruction set this CPU offers (cpu_features.h), or on the one asked for by
// name; enough chains per thread to cover the FMA latency on every port (4 cycles x 2 ports = 8 in flight on
// current x86 cores; 16 zmm or 12 ymm / scalar chains leave a margin and fit the register file).
#include <torch/extension.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "amx.h"
#include "cpu_features.h"
#include "ops.h"
#include "simd.h"

namespace speechmax {
namespace {

// The portable fallback: one lane, std::fma (one rounding, like the vector FMAs); kept scalar, else GCC packs
// the independent chains into vectors by itself and the "scalar" peak is a vector one.
#pragma GCC push_options
#pragma GCC optimize("no-tree-vectorize")
namespace isa_scalar {
struct V {
  using reg = float;
  static constexpr int W = 1;
  static reg load(const float* p) { return *p; }
  static void store(float* p, reg v) { *p = v; }
  static reg dot(reg acc, reg x, reg y) { return std::fma(x, y, acc); }
};
#include "peak_isa.h"
}  // namespace isa_scalar
#pragma GCC pop_options

namespace isa_avx2 {
struct V : simd::Avx2 {
  static reg dot(reg acc, reg x, reg y) { return fma(x, y, acc); }
};
#include "peak_isa.h"
}  // namespace isa_avx2

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace isa_avx512 {
struct V : simd::Avx512 {
  static reg dot(reg acc, reg x, reg y) { return fma(x, y, acc); }
};
#include "peak_isa.h"
}  // namespace isa_avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bf16")
namespace isa_avx512bf16 {
struct V : simd::Avx512 {  // x and y hold 16 bf16 pairs each; every fp32 lane gains x0*y0 + x1*y1
  static reg dot(reg acc, reg x, reg y) { return simd::dpbf16(acc, x, y); }
};
#include "peak_isa.h"
}  // namespace isa_avx512bf16
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16")
namespace isa_amx {
// 6 tiles accumulate from start (6 x 256 floats, tile-major), tile 6 holds A (x: 16 rows of 16 bf16 pairs),
// tile 7 B (y: 16 rows of pairs, one row per pair of A's columns, 16 outputs each); out receives the 6 tiles.
static void run_tiles(const float* start, const float* x, const float* y, int64_t n, float* out) {
  const TileConfig cfg = full_tiles();
  _tile_loadconfig(&cfg);
  _tile_loadd(0, start, 64);
  _tile_loadd(1, start + 256, 64);
  _tile_loadd(2, start + 512, 64);
  _tile_loadd(3, start + 768, 64);
  _tile_loadd(4, start + 1024, 64);
  _tile_loadd(5, start + 1280, 64);
  _tile_loadd(6, x, 64);
  _tile_loadd(7, y, 64);
  for (int64_t i = 0; i < n; ++i) {
    _tile_dpbf16ps(0, 6, 7);
    _tile_dpbf16ps(1, 6, 7);
    _tile_dpbf16ps(2, 6, 7);
    _tile_dpbf16ps(3, 6, 7);
    _tile_dpbf16ps(4, 6, 7);
    _tile_dpbf16ps(5, 6, 7);
  }
  _tile_stored(0, out, 64);
  _tile_stored(1, out + 256, 64);
  _tile_stored(2, out + 512, 64);
  _tile_stored(3, out + 768, 64);
  _tile_stored(4, out + 1024, 64);
  _tile_stored(5, out + 1280, 64);
  _tile_release();
}
}  // namespace isa_amx
#pragma GCC pop_options

using ChainsFn = void (*)(const float*, const float*, const float*, int64_t, float*);

struct Kernel {
  const char* kind;
  const char* isa;
  int chains, lanes, flops_per_lane;  // flops_per_lane: of one dot step (see the header comment)
  ChainsFn run;
  std::vector<const char*> needs;     // cpu_features() names
};

// Widest first: "auto" takes the first one this CPU runs.
const std::vector<Kernel>& kernels() {
  static const std::vector<Kernel> all{
      {"fp32", "avx512", 16, 16, 2, isa_avx512::run_chains<16>, {"avx512f"}},
      {"fp32", "avx2", 12, 8, 2, isa_avx2::run_chains<12>, {"avx2", "fma"}},
      {"fp32", "scalar", 12, 1, 2, isa_scalar::run_chains<12>, {}},
      {"bf16", "avx512bf16", 16, 16, 4, isa_avx512bf16::run_chains<16>, {"avx512f", "avx512bf16"}},
      {"amx_bf16", "amx", 6, 256, 64, isa_amx::run_tiles, {"amx_bf16"}},
  };
  return all;
}

bool runs_here(const Kernel& k) {
  const auto have = cpu_features();
  for (const char* f : k.needs)
    if (!have.at(f) || (std::string(f) == "amx_bf16" && !amx_ready())) return false;  // the OS must grant tiles
  return true;
}

// The kernel for (kind, isa); nullptr when isa is "auto" and nothing of that kind runs here (bf16 without
// AVX512-BF16). Naming an isa this CPU lacks is an error, as for the other kernels.
const Kernel* pick(const std::string& kind, const std::string& isa) {
  TORCH_CHECK(kind == "fp32" || kind == "bf16" || kind == "amx_bf16", "peak: unknown kind '", kind,
              "'; expected fp32, bf16 or amx_bf16");
  bool known = isa == "auto";
  for (const Kernel& k : kernels()) {
    if (kind != k.kind || (isa != "auto" && isa != k.isa)) continue;
    known = true;
    if (runs_here(k)) return &k;
  }
  TORCH_CHECK(known, "peak: no isa '", isa, "' for kind ", kind, "; expected auto or one of peak_isas(kind)");
  TORCH_CHECK(isa == "auto", "peak: isa '", isa, "' asked for, but this CPU lacks it");
  return nullptr;
}

uint32_t bf16_bits(float f) {  // the upper half of an fp32 (exact for the values below)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u >> 16;
}

float pair(float lo, float hi) {  // two bf16 in one fp32 lane: lo is the even element
  const uint32_t u = bf16_bits(lo) | bf16_bits(hi) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The lanes' values. Every sum stays exact in fp32 for short runs (multiples of 1/32 below 2^19: up to ~10^5
// steps), so the accumulators of a short run are known exactly (fma_chains_ref in speechmax/ops/peak.py):
// chain c, lane l starts at c + l/32; fp32 steps add x*y with x = 1 + l/16, y = 1/2; bf16 steps add
// x0*y0 + x1*y1 with x = (1 + l/16, 1/4), y = (1/2, -1) -- the odd product negative, so a lost half shows.
// Long runs saturate (acc + x*y rounds to acc) without reaching inf or denormals, so the speed stays flat.
// amx_bf16: A row m, pair p = (1 + m/8, 1/4) and B pair row p, column n = (1, n/32), so element (m, n) gains
// 16 + 2m + n/8 a step -- rising with the lane l = 16 m + n, as the starts do, so every lane ends distinct.
struct Operands {
  std::vector<float> start, x, y;
  explicit Operands(const Kernel& k) : start(k.chains * k.lanes), x(k.lanes), y(k.lanes) {
    const bool bf16 = std::string(k.kind) == "bf16";
    if (std::string(k.kind) == "amx_bf16") {
      for (int l = 0; l < k.lanes; ++l) {
        const int hi = l / 16, lo = l % 16;  // x: row m = hi, pair p = lo; y: pair p = hi, column n = lo
        x[l] = pair(1 + hi / 8.f, 0.25f);
        y[l] = pair(1.f, lo / 32.f);
        for (int c = 0; c < k.chains; ++c) start[c * k.lanes + l] = c + l / 32.f;
      }
      return;
    }
    for (int l = 0; l < k.lanes; ++l) {
      x[l] = bf16 ? pair(1 + l / 16.f, 0.25f) : 1 + l / 16.f;
      y[l] = bf16 ? pair(0.5f, -1.f) : 0.5f;
      for (int c = 0; c < k.chains; ++c) start[c * k.lanes + l] = c + l / 32.f;
    }
  }
};

// n steps of k's chains on each of `threads` OpenMP threads, every thread its own chains from the same starts;
// out (threads x chains x lanes) receives every thread's accumulators. Returns the wall-clock seconds.
double run(const Kernel& k, const Operands& ops, int64_t n, int threads, float* out) {
  int team = 0;
  const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
  {
    k.run(ops.start.data(), ops.x.data(), ops.y.data(), n, out + (size_t)omp_get_thread_num() * k.chains * k.lanes);
#pragma omp single nowait
    team = omp_get_num_threads();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  TORCH_CHECK(team == threads, "peak: OpenMP gave ", team, " threads, ", threads, " asked for");
  return seconds;
}

}  // namespace

std::vector<std::string> peak_isas(const std::string& kind) {
  std::vector<std::string> isas;
  for (const Kernel& k : kernels())
    if (kind == k.kind && runs_here(k)) isas.push_back(k.isa);
  return isas;
}

torch::Tensor peak_chains(const std::string& kind, int64_t iterations, int64_t threads, const std::string& isa) {
  TORCH_CHECK(iterations >= 0 && threads >= 1, "peak_chains: iterations must be >= 0 and threads >= 1, got ",
              iterations, " and ", threads);
  const Kernel* k = pick(kind, isa);
  TORCH_CHECK(k, "peak_chains: this CPU has no instruction set for kind ", kind);
  auto out = torch::empty({threads, k->chains, k->lanes}, torch::kFloat32);
  pybind11::gil_scoped_release no_gil;
  run(*k, Operands(*k), iterations, (int)threads, out.data_ptr<float>());
  return out;
}

double peak_gflops(const std::string& kind, int64_t threads, double seconds, const std::string& isa) {
  TORCH_CHECK(threads >= 1 && seconds > 0, "peak_gflops: threads must be >= 1 and seconds > 0, got ", threads,
              " and ", seconds);
  const Kernel* k = pick(kind, isa);
  if (!k) return std::numeric_limits<double>::quiet_NaN();
  pybind11::gil_scoped_release no_gil;
  const Operands ops(*k);
  std::vector<float> out((size_t)threads * k->chains * k->lanes);
  // Calibrate on one thread -- a team's start-up can stall for milliseconds when the other core is busy, which
  // would size the runs far too short: double the steps until a run lasts 20 ms ...
  int64_t n = 1 << 10;
  double t;
  while ((t = run(*k, ops, n, 1, out.data())) < 20e-3) n *= 2;
  // ... then three runs on all the threads (each doing n steps) of a third of the budget each, and the fastest:
  // other work on the machine can only slow a run down, never speed it up, so the peak is the best run.
  n = std::max<int64_t>(n, (int64_t)(n * seconds / 3 / t));
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < 3; ++r) best = std::min(best, run(*k, ops, n, (int)threads, out.data()));
  for (float v : out) TORCH_CHECK(std::isfinite(v), "peak_gflops: a chain left the finite range");
  return (double)threads * k->chains * k->lanes * k->flops_per_lane * n / best / 1e9;
}

}  // namespace speechmax
