// The fused sampler's ISA-specific half: the GEMM microkernels and the per-thread autoregressive loop.
// wavenet_cpu.cpp includes this file once per instruction set, inside a namespace that defines `V` (the
// vector type and its operations), and inside `#pragma GCC target` for the wider sets -- hence no include
// guard. Everything here has internal linkage, so no copy built for AVX-512 can leak into the AVX2 path.
//
// Shapes: activations are batch-major, one padded row per item ([item][channel], rows a multiple of 16
// floats), so a GEMM reads X[b][k] as a broadcast and writes Y[b][o..o+W) as a vector. Weights are packed
// by speechmax/ops/wavenet.py in panels of up to 64 outputs, input-major inside a panel: row k holds the
// panel's outputs for input k (fp32), or for the input pair (k, k+1) interleaved (bf16), so one load gives
// a vector of outputs and each broadcast input is reused across them.
//
// Weight modes: kF32; kBF16 (bf16 pairs widened to fp32 in registers, fp32 inputs -- any AVX2 CPU); kBF16Dot
// (AVX512-BF16 vdpbf16ps: bf16 pairs times the inputs rounded to bf16 pairs, fp32 accumulation -- half the
// instructions of kBF16, as the CPU has it; V::dot may also be an exact emulation, for testing).

// At batch 1 each weight feeds one vdpbf16ps, which uses the weights (1.6 MB in bf16, from L2) faster than
// the L1 prefetchers bring them in: the kBF16Dot microkernel asks for the weight stream this far ahead (~8 panel rows;
// the stream runs on contiguously into the next panel and matrix, and a prefetch past the end cannot fault).
// In fp32 the 3.1 MB of weights stream from L3 and the same prefetch gained only 2-4%, so it is not there.
constexpr int kPrefetchBytes = 2048;

// Y[b] = bias + init[b] + W X[b] for a block of NV vectors of outputs and NB items. With one item, two
// accumulator sets (even / odd inputs) keep two FMA chains in flight per vector. In kBF16Dot mode X holds
// bf16 pairs (one 32-bit word per input pair; ldx counts words).
template <int NV, int NB, int MODE>
static void microkernel(const void* wp, int P, int Kp, const float* X, int ldx, const float* init, int ld_init,
                        const float* bias, float* Y, int ldy) {
  using R = typename V::reg;
  using VD = typename Dependent<MODE, V>::type;  // V::dot exists only where kBF16Dot is instantiated
  constexpr int W = V::W;
  constexpr int NA = NB == 1 ? 2 : 1;
  const float* xp[NB];  // one pointer per item: broadcasts become base + k, no index arithmetic per load
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b) xp[b] = X + (size_t)b * ldx;
  const size_t stride = (size_t)P;
  R acc[NA][NV][NB];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const R bv = V::load(bias + v * W);
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) {
      acc[0][v][b] = init ? V::add(bv, V::load(init + b * ld_init + v * W)) : bv;
      if (NA == 2) acc[NA - 1][v][b] = V::zero();
    }
  }
  if constexpr (MODE == kBF16) {
    const uint16_t* w = static_cast<const uint16_t*>(wp);
    for (size_t k = 0; k < (size_t)Kp; k += 2) {  // Kp is even; the pair row k/2 starts at (k/2) * 2P = k * P
      R lo[NV], hi[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) V::bf16_pair(w + k * stride + 2 * v * W, lo[v], hi[v]);
#pragma GCC unroll 8
      for (int b = 0; b < NB; ++b) {
        const R x0 = V::set1(xp[b][k]), x1 = V::set1(xp[b][k + 1]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          acc[0][v][b] = V::fma(lo[v], x0, acc[0][v][b]);
          acc[NA - 1][v][b] = V::fma(hi[v], x1, acc[NA - 1][v][b]);
        }
      }
    }
  } else if constexpr (MODE == kBF16Dot) {
    // NA pairs per iteration, each into the accumulator set of its compile-time index u: indexed by a run-time
    // j % NA, the accumulators lived on the stack, a store-to-load round trip on every vdpbf16ps at batch 1.
    const uint16_t* w = static_cast<const uint16_t*>(wp);
    const size_t J = (size_t)Kp / 2;
    for (size_t j = 0; j < J; j += NA) {
#pragma GCC unroll 2
      for (int u = 0; u < NA; ++u) {
        if (NA > 1 && j + u >= J) break;  // odd J with two accumulator sets
        R wv[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          const uint16_t* row = w + 2 * (j + u) * stride + 2 * v * W;
          if constexpr (NB == 1) _mm_prefetch(reinterpret_cast<const char*>(row) + kPrefetchBytes, _MM_HINT_T0);
          wv[v] = V::load(reinterpret_cast<const float*>(row));
        }
#pragma GCC unroll 8
        for (int b = 0; b < NB; ++b) {
          const R xb = V::set1(xp[b][j + u]);  // the pair's 32 bits, broadcast
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) acc[u][v][b] = VD::dot(acc[u][v][b], wv[v], xb);
        }
      }
    }
  } else {
    const float* w = static_cast<const float*>(wp);
    size_t k = 0;
    for (; k + 1 < (size_t)Kp; k += 2) {
#pragma GCC unroll 2
      for (int u = 0; u < 2; ++u) {
        R wv[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) wv[v] = V::load(w + (k + u) * stride + v * W);
#pragma GCC unroll 8
        for (int b = 0; b < NB; ++b) {
          const R xb = V::set1(xp[b][k + u]);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) acc[u % NA][v][b] = V::fma(wv[v], xb, acc[u % NA][v][b]);
        }
      }
    }
    if (k < (size_t)Kp) {
#pragma GCC unroll 8
      for (int b = 0; b < NB; ++b) {
        const R xb = V::set1(xp[b][k]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[0][v][b] = V::fma(V::load(w + k * stride + v * W), xb, acc[0][v][b]);
      }
    }
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v)
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b)
      V::store(Y + b * ldy + v * W, NA == 2 ? V::add(acc[0][v][b], acc[NA - 1][v][b]) : acc[0][v][b]);
}

template <int NV, int MODE>
static void microkernel_nb(int nb, const void* wp, int P, int Kp, const float* X, int ldx, const float* init,
                           int ld_init, const float* bias, float* Y, int ldy) {
  switch (nb) {
#define WN_CASE(n)                                                                              \
  case n:                                                                                       \
    if constexpr (n <= V::NBMAX) microkernel<NV, n, MODE>(wp, P, Kp, X, ldx, init, ld_init, bias, Y, ldy); \
    break;
    WN_CASE(1) WN_CASE(2) WN_CASE(3) WN_CASE(4) WN_CASE(5) WN_CASE(6)
#undef WN_CASE
  }
}

// float -> bf16, round to nearest even (the rounding vcvtne2ps2bf16 does; no NaN can reach here).
static uint32_t bf16_bits(float x) {
  const uint32_t u = __builtin_bit_cast(uint32_t, x);
  return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

// Y[b] (ldy) = bias + init[b] (ld_init, may be null) + W X[b] (ldx) for n items; W = matrix `mat` of m.
// Panel-outer, items-inner: a panel (at most 64 x Kp weights, 32 KB in fp32 for Kp = 128) stays in L1
// while every block of items uses it. Item blocks are balanced (32 items -> 6,6,5,5,5,5 rather than 6x5+2).
// kBF16Dot first rounds X to bf16 pairs in `pairs` (n rows of ldx / 2 words).
template <int MODE>
static void gemm(const Model& m, int mat, const float* X, int ldx, const float* init, int ld_init, float* Y,
                 int ldy, int n, float* pairs) {
  const MatrixDesc d = m.matrix(mat);
  const float* bias = m.bias + d.bias_off;
  if constexpr (MODE == kBF16Dot) {
    for (int b = 0; b < n; ++b) {
      const float* x = X + (size_t)b * ldx;
      uint32_t* q = reinterpret_cast<uint32_t*>(pairs) + (size_t)b * (ldx / 2);
      WN_SIMD
      for (int j = 0; j < d.Kp / 2; ++j) q[j] = bf16_bits(x[2 * j]) | (bf16_bits(x[2 * j + 1]) << 16);
    }
    X = pairs;
    ldx /= 2;
  }
  const int nblocks = (n + V::NBMAX - 1) / V::NBMAX;
  for (int p0 = 0; p0 < d.Mp; p0 += kWavenetPanel) {
    const int P = d.Mp - p0 < kWavenetPanel ? d.Mp - p0 : kWavenetPanel;
    const size_t panel = d.off + (size_t)p0 * d.Kp;
    for (int c0 = 0; c0 < P; c0 += 4 * V::W) {
      const int nv = (P - c0) / V::W < 4 ? (P - c0) / V::W : 4;
      const void* wp = MODE != kF32 ? (const void*)(m.w_bf16 + panel + 2 * c0) : (const void*)(m.w_f32 + panel + c0);
      const int o = p0 + c0;
      for (int blk = 0, b0 = 0; blk < nblocks; ++blk) {
        const int nb = (n - b0 + (nblocks - blk) - 1) / (nblocks - blk);
        const float* in = init ? init + (size_t)b0 * ld_init + o : nullptr;
        const float* x = X + (size_t)b0 * ldx;
        float* y = Y + (size_t)b0 * ldy + o;
        switch (nv) {
          case 1: microkernel_nb<1, MODE>(nb, wp, P, d.Kp, x, ldx, in, ld_init, bias + o, y, ldy); break;
          case 2: microkernel_nb<2, MODE>(nb, wp, P, d.Kp, x, ldx, in, ld_init, bias + o, y, ldy); break;
          case 3: microkernel_nb<3, MODE>(nb, wp, P, d.Kp, x, ldx, in, ld_init, bias + o, y, ldy); break;
          default: microkernel_nb<4, MODE>(nb, wp, P, d.Kp, x, ldx, in, ld_init, bias + o, y, ldy); break;
        }
        b0 += nb;
      }
    }
  }
}

// wn::fexp and wn::gate on a vector, with the same constants; the gate's division becomes a reciprocal estimate
// and one Newton step (relative error ~2^-22). The compiler-vectorised scalar loop, waiting on its division,
// took ~15% of a batch-64 step.
static typename V::reg exp_v(typename V::reg x) {
  using R = typename V::reg;
  x = V::clamp(x, wn::kExpLo, wn::kExpHi);
  const R n = V::round(V::mul(x, V::set1(wn::kLog2e)));
  const R r = V::fnma(n, V::set1(wn::kLn2Lo), V::fnma(n, V::set1(wn::kLn2Hi), x));
  R p = V::fma(V::set1(wn::kExpP0), r, V::set1(wn::kExpP1));
  p = V::fma(p, r, V::set1(wn::kExpP2));
  p = V::fma(p, r, V::set1(wn::kExpP3));
  p = V::fma(p, r, V::set1(wn::kExpP4));
  p = V::fma(p, r, V::set1(wn::kExpP5));
  p = V::fma(V::mul(p, r), r, V::add(r, V::set1(1.0f)));
  return V::scale2(p, n);
}

static typename V::reg gate_v(typename V::reg a, typename V::reg b) {
  using R = typename V::reg;
  const R one = V::set1(1.0f);
  const R e = exp_v(V::mul(V::set1(-2.0f), V::abs(a))), f = exp_v(V::mul(V::set1(-1.0f), b));
  const R den = V::mul(V::add(one, e), V::add(one, f));  // <= 2 exp(87): finite
  R y = V::rcp(den);
  y = V::mul(y, V::fnma(den, y, V::set1(2.0f)));
  return V::mul(V::with_sign(V::fnma(one, e, one), V::sign(a)), y);
}

// Item b's ring row for layer l, slot `slot` (= wn::ring_slot(step, d)): R floats.
static float* ring_row(const Model& m, const Job& job, int b, int l, int slot) {
  return job.rings + ((size_t)b * m.ring_len + m.ring_off[l] + slot) * m.R;
}

// The whole autoregressive loop for items [b0, b1) of the job: every step runs all layers and the head,
// then draws. Conditioning is projected for all layers when a step enters a new frame.
template <int MODE>
static void run_items(const Model& m, const Job& job, int b0, int b1, float* ws_base) {
  const int n = b1 - b0;
  const Workspace ws = Workspace::carve(m, n, ws_base);
  const int L = m.L, R = m.R, Rp = m.Rp, Ghp = m.Ghp, Sp = m.Sp, Op = m.Op, NC = m.NC, NCp = m.NCp;
  const int lcond = L * 2 * Ghp;
  for (int b = 0; b < n; ++b) ws.prev[b] = (int)job.prev[b0 + b];
  long frame = -1;
  for (long t = 0; t < job.T; ++t) {
    const long step = job.step + t;
    const long f = wn::frame_of(job.t0 + t, m.hop);
    if (f != frame) {
      frame = f;
      for (int b = 0; b < n; ++b) {
        const float* src = job.feats + ((size_t)(b0 + b) * job.F + f) * m.C;
        for (int c = 0; c < m.C; ++c) ws.xc[b * m.Cp + c] = src[c];
      }
      gemm<MODE>(m, Model::kCond, ws.xc, m.Cp, nullptr, 0, ws.cond, lcond, n, ws.pairs);
    }
    for (int b = 0; b < n; ++b) {
      const float* e = m.embed + (size_t)ws.prev[b] * R;
      float* x = ws.xin + (size_t)b * 2 * Rp + Rp;
      for (int r = 0; r < R; ++r) x[r] = e[r];
    }
    for (int l = 0; l < L; ++l) {
      const int slot = wn::ring_slot(step, m.dil[l]);
      for (int b = 0; b < n; ++b) {
        float* ring = ring_row(m, job, b0 + b, l, slot);
        float* xin = ws.xin + (size_t)b * 2 * Rp;
        std::memcpy(xin, ring, R * sizeof(float));
        std::memcpy(ring, xin + Rp, R * sizeof(float));
      }
      gemm<MODE>(m, Model::gate(l), ws.xin, 2 * Rp, ws.cond + l * 2 * Ghp, lcond, ws.h, 2 * Ghp, n, ws.pairs);
      // The rings of a large batch outgrow L2 (4 MB at batch 64) and slot step % d was last touched d steps
      // ago: fetch the next layer's slots now, while this layer's gates and GEMMs run -- an item's at a time
      // (all of them at once, before the gate GEMM, stalled on the line-fill buffers: 4% of a batch-64 step).
      const int next_slot = wn::ring_slot(l + 1 < L ? step : step + 1, m.dil[(l + 1) % L]);
      for (int b = 0; b < n; ++b) {
        const char* next = reinterpret_cast<const char*>(ring_row(m, job, b0 + b, (l + 1) % L, next_slot));
        for (int off = 0; off < R * (int)sizeof(float); off += 64) _mm_prefetch(next + off, _MM_HINT_T0);
        const float* h = ws.h + (size_t)b * 2 * Ghp;
        float* z = ws.z + (size_t)b * Ghp;
        for (int j = 0; j < Ghp; j += V::W) V::store(z + j, gate_v(V::load(h + j), V::load(h + Ghp + j)));
      }
      gemm<MODE>(m, Model::skip(l), ws.z, Ghp, l == 0 ? nullptr : ws.skip, Sp, ws.skip, Sp, n, ws.pairs);
      if (l + 1 < L) {  // the last layer's residual output feeds nothing
        gemm<MODE>(m, Model::res(l), ws.z, Ghp, nullptr, 0, ws.r, Rp, n, ws.pairs);
        for (int b = 0; b < n; ++b) {
          float* x = ws.xin + (size_t)b * 2 * Rp + Rp;
          const float* r = ws.r + (size_t)b * Rp;
          WN_SIMD
          for (int j = 0; j < Rp; ++j) x[j] = wn::residual(x[j], r[j]);
        }
      }
    }
    WN_SIMD
    for (int j = 0; j < n * Sp; ++j) ws.skip[j] = ws.skip[j] > 0.0f ? ws.skip[j] : 0.0f;
    gemm<MODE>(m, Model::head1(L), ws.skip, Sp, nullptr, 0, ws.h1, Op, n, ws.pairs);
    WN_SIMD
    for (int j = 0; j < n * Op; ++j) ws.h1[j] = ws.h1[j] > 0.0f ? ws.h1[j] : 0.0f;
    gemm<MODE>(m, Model::head2(L), ws.h1, Op, nullptr, 0, ws.logits, NCp, n, ws.pairs);
    for (int b = 0; b < n; ++b) {
      const size_t row = (size_t)(b0 + b);
      const float* logits = ws.logits + (size_t)b * NCp;
      if (job.logits) {
        float* dst = job.logits + row * job.ld_logits + (size_t)t * NC;
        for (int k = 0; k < NC; ++k) dst[k] = logits[k];
      }
      const int q = job.teacher ? (int)job.teacher[row * job.ld_teacher + t]
                                : wn::draw(logits, NC, job.temperature, job.uniforms[row * job.ld_u + t], ws.scratch);
      ws.prev[b] = q;
      job.classes[row * job.ld_classes + t] = q;
      if (job.wave) job.wave[row * job.ld_wave + t] = job.decode[q];
    }
  }
  for (int b = 0; b < n; ++b) job.prev[b0 + b] = ws.prev[b];
}
