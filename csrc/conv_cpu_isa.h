// The convolution microkernel of the CPU kernels that run packed convolutions (maximize_cpu.cpp, decoder2d.cpp):
// the ISA-specific half. Each includes this file once per instruction set, inside a namespace that defines `V`
// (conv_cpu.h), and inside `#pragma GCC target` for the wider set -- hence no include guard. Everything here has
// internal linkage, so no AVX-512 copy can leak into the AVX2 path.
//
// Layout: every activation is time-major, one row per frame ([t][channel], rows padded to kChannelAlign
// floats), with zero rows before and after, so a convolution reads its input rows t + j - pad without bounds
// tests. A convolution is a small GEMM per sample, Y (T x Cout) = X_col (T x taps*Cin) W, with X_col never
// built: row (j, c) of the implicit im2col matrix is input row t + j - pad, channel c. Weights come packed by
// speechmax/ops/packing.py in panels of kConvPanel outputs, input-major inside a panel (row j*Cin + c holds the
// panel's outputs), so one vector load gives consecutive outputs and each broadcast input feeds all of them.

// Y[t][o] = epilogue(sum_{j, c} W[j*cin + c][o] X[(t + j) * ldx + c]) for NT rows and NV vectors of outputs;
// X points at the first input row the first output reads (row t0 - pad). Epilogue, in this order:
// + bias[o], + init[t][o] (may alias Y: accumulation), ReLU, then zero where mask[t][o] <= 0.
template <int NV, int NT>
static void micro(const float* __restrict__ w, int pw, int cin, int taps, const float* X, long ldx, float* Y,
                  long ldy, const float* bias, const float* init, long ld_init, bool relu, const float* mask,
                  long ld_mask) {
  using R = typename V::reg;
  constexpr int W = V::W;
  R acc[NT][NV];
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[t][v] = V::zero();
  for (int j = 0; j < taps; ++j) {
    const float* xj = X + j * ldx;
    const float* wj = w + (size_t)j * cin * pw;
    for (int c = 0; c < cin; ++c) {
      R wv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) wv[v] = V::load(wj + (size_t)c * pw + v * W);
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) {
        const R xb = V::set1(xj[t * ldx + c]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[t][v] = V::fma(wv[v], xb, acc[t][v]);
      }
    }
  }
  for (int t = 0; t < NT; ++t) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      R r = acc[t][v];
      if (bias) r = V::add(r, V::load(bias + v * W));
      if (init) r = V::add(r, V::load(init + t * ld_init + v * W));
      if (relu) r = V::relu(r);
      if (mask) r = V::keep_where_positive(r, V::load(mask + t * ld_mask + v * W));
      V::store(Y + t * ldy + v * W, r);
    }
  }
}

using MicroFn = void (*)(const float*, int, int, int, const float*, long, float*, long, const float*,
                         const float*, long, bool, const float*, long);

template <int NV, int... NTs>
static constexpr std::array<MicroFn, sizeof...(NTs)> micro_table(std::integer_sequence<int, NTs...>) {
  return {{&micro<NV, NTs + 1>...}};
}

// Rows per tile: as many accumulators as the register file holds beside NV weight vectors and a broadcast.
template <int NV>
constexpr int rows_per_tile() {
  constexpr int fit = (V::NREG - NV - 1) / NV;
  return fit < kMaxTile ? fit : kMaxTile;
}

template <int NV>
static MicroFn pick_micro(int nt) {
  static constexpr auto table = micro_table<NV>(std::make_integer_sequence<int, rows_per_tile<NV>()>{});
  return table[nt - 1];
}

// One convolution (or linear map: taps 1, pad 0) over T output rows, in panels of kConvPanel outputs (a panel's
// weights, at most kConvPanel x taps*Cin floats -- 110 KB for a 96-channel k9 layer -- stay in L2 while every
// tile of rows uses them). X and Y point at row 0 of their buffers; see micro() for the epilogue.
static void conv_direct(const Mat& m, const float* X, long ldx, int T, float* Y, long ldy, const float* bias,
                        const float* init, long ld_init, bool relu, const float* mask, long ld_mask) {
  constexpr int W = V::W;
  const float* X0 = X - (long)m.pad * ldx;
  const size_t K = (size_t)m.taps * m.cin;
  for (int p0 = 0; p0 < m.coutp; p0 += kConvPanel) {
    const int pw = m.coutp - p0 < kConvPanel ? m.coutp - p0 : kConvPanel;
    const float* wp = m.w + p0 * K;
    const int nv = pw / W;
    const int tile = nv == kConvPanel / W ? rows_per_tile<kConvPanel / W>() : rows_per_tile<kConvPanel / W / 2>();
    for (int t0 = 0; t0 < T; t0 += tile) {
      const int nt = T - t0 < tile ? T - t0 : tile;
      const MicroFn fn = nv == kConvPanel / W ? pick_micro<kConvPanel / W>(nt) : pick_micro<kConvPanel / W / 2>(nt);
      fn(wp, pw, m.cin, m.taps, X0 + t0 * ldx, ldx, Y + t0 * ldy + p0, ldy, bias ? bias + p0 : nullptr,
         init ? init + t0 * ld_init + p0 : nullptr, ld_init, relu, mask ? mask + t0 * ld_mask + p0 : nullptr,
         ld_mask);
    }
  }
}

