// The fused ascent step's ISA-specific half: the convolution microkernel and the per-thread loop over
// samples. maximize_cpu.cpp includes this file once per instruction set, inside a namespace that defines
// `V` (the vector type and its operations), and inside `#pragma GCC target` for the wider set -- hence no
// include guard. Everything here has internal linkage, so no AVX-512 copy can leak into the AVX2 path.
//
// Layout: every activation is time-major, one row per frame ([t][channel], rows padded to 16 floats), with
// kPad zero rows before and after, so a convolution reads its input rows t + j - pad without bounds tests.
// A convolution is a small GEMM per sample, Y (T x Cout) = X_col (T x taps*Cin) W, with X_col never built:
// row (j, c) of the implicit im2col matrix is input row t + j - pad, channel c. Weights come packed by
// speechmax/ops/maximize.py in panels of kPanel outputs, input-major inside a panel (row j*Cin + c holds the
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

// One convolution (or linear map: taps 1, pad 0) over T output rows, in panels of kPanel outputs (a panel's
// weights, at most kPanel x taps*Cin floats -- 110 KB for a 96-channel k9 layer -- stay in L2 while every
// tile of rows uses them). X and Y point at row 0 of their buffers; see micro() for the epilogue.
static void conv_direct(const Mat& m, const float* X, long ldx, int T, float* Y, long ldy, const float* bias,
                        const float* init, long ld_init, bool relu, const float* mask, long ld_mask) {
  constexpr int W = V::W;
  const float* X0 = X - (long)m.pad * ldx;
  const size_t K = (size_t)m.taps * m.cin;
  for (int p0 = 0; p0 < m.coutp; p0 += kPanel) {
    const int pw = m.coutp - p0 < kPanel ? m.coutp - p0 : kPanel;
    const float* wp = m.w + p0 * K;
    const int nv = pw / W;
    const int tile = nv == kPanel / W ? rows_per_tile<kPanel / W>() : rows_per_tile<kPanel / W / 2>();
    for (int t0 = 0; t0 < T; t0 += tile) {
      const int nt = T - t0 < tile ? T - t0 : tile;
      const MicroFn fn = nv == kPanel / W ? pick_micro<kPanel / W>(nt) : pick_micro<kPanel / W / 2>(nt);
      fn(wp, pw, m.cin, m.taps, X0 + t0 * ldx, ldx, Y + t0 * ldy + p0, ldy, bias ? bias + p0 : nullptr,
         init ? init + t0 * ld_init + p0 : nullptr, ld_init, relu, mask ? mask + t0 * ld_mask + p0 : nullptr,
         ld_mask);
    }
  }
}

// The same convolution by Winograd F(3, 3) (see _winograd_matrices in speechmax/ops/maximize.py): the taps,
// padded to 3 S, are S 3-tap sub-filters at offsets 0, 3, .., 3 (S - 1); outputs come in tiles of 3 rows. Input
// window i' (rows 3 i' - pad .. + 4) is transformed once, D[a][i'] = sum_q BT[a][q] x[3 i' - pad + q]; per
// transform point a, M[a][i] = sum_s U[a][s] D[a][i + s] is an S-tap convolution over tiles -- the direct
// kernel above on pre-transformed weights; then y[3 i + v] = sum_a AT[v][a] M[a][i] with the epilogue.
// 5 S multiply-adds per 3 outputs and input channel instead of 9 S. Reads input rows up to 3 ceil(T / 3) +
// 3 (S - 1) + 4 - pad -- within kPad zero rows of the end for every layer of the supported models.
static void conv_winograd(const Mat& m, const float* X, long ldx, int T, float* Y, long ldy, const float* bias,
                          const float* init, long ld_init, bool relu, const float* mask, long ld_mask, Work& w) {
  const int S = m.S, cin = m.cin, coutp = m.coutp, cinp = (cin + 15) / 16 * 16;
  const int nt = (T + 2) / 3, nw = nt + S - 1;
  const float* X0 = X - (long)m.pad * ldx;
  const long dstride = (long)nw * cinp, mstride = (long)nt * coutp;
  const float(*bt)[5] = w.wino->bt;
  for (int i = 0; i < nw; ++i) {
    const float* r = X0 + 3L * i * ldx;
    float* d = w.wd + (long)i * cinp;
    for (int a = 0; a < 5; ++a) {
      const float b0 = bt[a][0], b1 = bt[a][1], b2 = bt[a][2], b3 = bt[a][3], b4 = bt[a][4];
      float* da = d + a * dstride;
#pragma omp simd
      for (int c = 0; c < cin; ++c)
        da[c] = b0 * r[c] + b1 * r[ldx + c] + b2 * r[2 * ldx + c] + b3 * r[3 * ldx + c] + b4 * r[4 * ldx + c];
    }
  }
  for (int a = 0; a < 5; ++a) {
    Mat inner;
    inner.w = m.ww + a * m.astride, inner.cin = cin, inner.coutp = coutp, inner.taps = S, inner.pad = 0;
    conv_direct(inner, w.wd + a * dstride, cinp, nt, w.wm + a * mstride, coutp, nullptr, nullptr, 0, false,
                nullptr, 0);
  }
  const float(*at)[5] = w.wino->at;
  for (int i = 0; i < nt; ++i) {
    const float* m0 = w.wm + (long)i * coutp;
    for (int v = 0; v < 3 && 3 * i + v < T; ++v) {
      const long t = 3L * i + v;
      const float a0 = at[v][0], a1 = at[v][1], a2 = at[v][2], a3 = at[v][3], a4 = at[v][4];
      const float* in = init ? init + t * ld_init : nullptr;
      const float* mk = mask ? mask + t * ld_mask : nullptr;
      float* y = Y + t * ldy;
#pragma omp simd
      for (int o = 0; o < coutp; ++o) {
        float acc = a0 * m0[o] + a1 * m0[mstride + o] + a2 * m0[2 * mstride + o] + a3 * m0[3 * mstride + o] +
                    a4 * m0[4 * mstride + o];
        if (bias) acc += bias[o];
        if (in) acc += in[o];
        if (relu) acc = mx::relu(acc);
        if (mk) acc = mk[o] > 0.0f ? acc : 0.0f;
        y[o] = acc;
      }
    }
  }
}

static void conv(const Mat& m, const float* X, long ldx, int T, float* Y, long ldy, const float* bias,
                 const float* init, long ld_init, bool relu, const float* mask, long ld_mask, Work& w) {
  if (m.ww && w.wino)
    conv_winograd(m, X, ldx, T, Y, ldy, bias, init, ld_init, relu, mask, ld_mask, w);
  else
    conv_direct(m, X, ldx, T, Y, ldy, bias, init, ld_init, relu, mask, ld_mask);
}

static void conv_fwd(Work& w, const Mat& m, const float* X, long ldx, int T, float* Y, long ldy, bool relu,
                     const float* init = nullptr, long ld_init = 0) {
  conv(m, X, ldx, T, Y, ldy, m.b, init, ld_init, relu, nullptr, 0, w);
}

static void conv_bwd(Work& w, const Mat& m, const float* dY, long ld_dy, int T, float* dX, long ld_dx,
                     const float* mask, long ld_mask, const float* init = nullptr) {
  conv(m, dY, ld_dy, T, dX, ld_dx, nullptr, init, ld_dx, false, mask, ld_mask, w);
}

// Decoder forward for one sample from h0 (T0 rows): nearest-x2 upsampling + conv k is run as two convs of
// D taps on the low-rate rows (one per output phase, written to every other row), which is exact and needs
// 2D instead of 2k taps per output pair (6 instead of 10 for k = 5).
static void decoder_forward(const Net& n, const float* h0, Work& w) {
  for (int ph = 0; ph < 2; ++ph) conv_fwd(w, n.c1[ph], h0, n.Cp, n.T0, w.h1 + ph * n.Cp, 2 * n.Cp, true);
  for (int ph = 0; ph < 2; ++ph) conv_fwd(w, n.c2[ph], w.h1, n.Cp, 2 * n.T0, w.h2 + ph * n.C2p, 2 * n.C2p, true);
  conv_fwd(w, n.c3, w.h2, n.C2p, n.T, w.xn, n.Mp, false);  // conv3 + de-normalisation + the classifier's norm
}

// dxn (T rows, zero beyond) -> dh0 (T0 rows), through the ReLU masks of the forward pass.
static void decoder_backward(const Net& n, const float* h0, float* dh0, Work& w) {
  conv_bwd(w, n.c3T, w.dxn, n.Mp, 4 * n.T0, w.dh2, n.C2p, w.h2, n.C2p);
  for (int ph = 0; ph < 2; ++ph)
    conv_bwd(w, n.c2T[ph], w.dh2 + ph * n.C2p, 2 * n.C2p, 2 * n.T0, w.dh1, n.Cp, ph ? w.h1 : nullptr, n.Cp,
             ph ? w.dh1 : nullptr);
  for (int ph = 0; ph < 2; ++ph)
    conv_bwd(w, n.c1T[ph], w.dh1 + ph * n.Cp, 2 * n.Cp, n.T0, dh0, n.Cp, ph ? h0 : nullptr, n.Cp,
             ph ? dh0 : nullptr);
}

// Classifier forward from w.xn up to the objective's layer, the objective, and its gradient back to w.dxn.
static float classifier_step(const Net& n, const Job& job, int target, Work& w) {
  const int T = n.T, ld = n.cmp;
  conv_fwd(w, n.stem, w.xn, n.Mp, T, w.act[0], ld, true);
  const int top = job.level < n.nb ? job.level : n.nb;
  for (int i = 1; i <= top; ++i) {
    const float* x = w.act[2 * i - 2];
    float* a = w.act[2 * i - 1];
    float* y = w.act[2 * i];
    conv_fwd(w, n.b1[i - 1], x, ld, T, a, ld, true);
    if (n.proj[i - 1]) {
      conv_fwd(w, n.pj[i - 1], x, ld, T, y, ld, false);
      conv_fwd(w, n.b2[i - 1], a, ld, T, y, ld, true, y, ld);
    } else {
      conv_fwd(w, n.b2[i - 1], a, ld, T, y, ld, true, x, ld);
    }
  }
  // The objective and the gradient at the top layer's output, then through its ReLU: dc.
  const float* y = w.act[2 * top];
  const int ctop = n.ch[top];
  float* dc = w.grad[0];
  float obj;
  if (job.level > n.nb) {
    for (int c = 0; c < ctop; ++c) {
      double s = 0;
      for (int t = 0; t < T; ++t) s += y[t * ld + c];
      w.pool[c] = (float)(s / T);
    }
    if (job.level == n.nb + 2) {
      conv_fwd(w, n.head, w.pool, 0, 1, w.logits, n.NCp, false);
      const bool unit = job.objective == mx::kUnit;
      obj = mx::class_objective(w.logits, n.NC, unit ? job.unit : target, unit ? mx::kLogit : job.objective,
                                w.dlogits);
      conv_bwd(w, n.headT, w.dlogits, 0, 1, w.dpool, 0, nullptr, 0);
    } else {
      obj = w.pool[job.unit];
      for (int c = 0; c < ctop; ++c) w.dpool[c] = c == job.unit ? 1.0f : 0.0f;
    }
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < ctop; ++c) dc[t * ld + c] = mx::relu_grad(w.dpool[c] / T, y[t * ld + c]);
  } else {
    double s = 0;
    for (int t = 0; t < T; ++t) s += y[t * ld + job.unit];
    obj = (float)(s / T);
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < ctop; ++c) dc[t * ld + c] = c == job.unit ? mx::relu_grad(1.0f / T, y[t * ld + c]) : 0.0f;
  }
  float* dx = w.grad[1];
  float* da = w.grad[2];
  for (int i = top; i >= 1; --i) {
    const float* xprev = w.act[2 * i - 2];
    conv_bwd(w, n.b2T[i - 1], dc, ld, T, da, ld, w.act[2 * i - 1], ld);
    if (n.proj[i - 1]) {
      conv_bwd(w, n.pjT[i - 1], dc, ld, T, dx, ld, nullptr, 0);
      conv_bwd(w, n.b1T[i - 1], da, ld, T, dx, ld, xprev, ld, dx);
    } else {
      conv_bwd(w, n.b1T[i - 1], da, ld, T, dx, ld, xprev, ld, dc);
    }
    float* tmp = dc;
    dc = dx;
    dx = tmp;
  }
  conv_bwd(w, n.stemT, dc, ld, T, w.dxn, n.Mp, nullptr, 0);
  return obj;
}

// Samples [s0, s1) of the job. Latent mode runs the decoder's first (linear) layer for a group of samples at
// once, so its weights -- the largest matrix, 2.5 MB at the default shapes -- are read once per group.
static void run_samples(const Net& n, const Job& job, long s0, long s1, Work& w) {
  const int T = n.T, M = n.M, Mp = n.Mp;
  for (long g0 = s0; g0 < s1; g0 += kGroup) {
    const int gn = (int)(s1 - g0 < kGroup ? s1 - g0 : kGroup);
    if (n.latent) {
      const long hs = n.h0_stride;
      float* h0g = w.h0g + (long)kPad * n.Cp;
      float* dh0g = w.dh0g + (long)kPad * n.Cp;
      conv_fwd(w, n.fc, job.x + g0 * n.L, n.L, gn, h0g, hs, true);
      for (int i = 0; i < gn; ++i) {
        decoder_forward(n, h0g + i * hs, w);
        w.obj[i] = classifier_step(n, job, (int)job.targets[g0 + i], w);
        decoder_backward(n, h0g + i * hs, dh0g + i * hs, w);
      }
      conv_bwd(w, n.fcT, dh0g, hs, gn, w.gz, n.Lp, nullptr, 0);
      for (int i = 0; i < gn; ++i) {
        float* g = w.gz + (long)i * n.Lp;
        const float* z = job.x + (g0 + i) * n.L;
        for (int k = 0; k < n.L; ++k) g[k] += mx::l2_grad(z[k], job.l2, n.L);
        finish_sample(job, g0 + i, w.obj[i], g);
      }
    } else {
      for (int i = 0; i < gn; ++i) {
        const long s = g0 + i;
        const float* x = job.x + s * job.nvar;
        for (int t = 0; t < T; ++t)
          for (int c = 0; c < M; ++c) w.xn[t * Mp + c] = (x[c * T + t] - n.mean[c]) * n.istd[c];
        const float obj = classifier_step(n, job, (int)job.targets[s], w);
        for (int c = 0; c < M; ++c)
          for (int t = 0; t < T; ++t) {
            const float xn = w.xn[t * Mp + c];
            w.gx[c * T + t] = (w.dxn[t * Mp + c] + mx::l2_grad(xn, job.l2, M * T)) * n.istd[c];
          }
        finish_sample(job, s, obj, w.gx);
      }
    }
  }
}
