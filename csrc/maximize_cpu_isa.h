// The fused ascent step's ISA-specific half: Winograd convolutions and the per-thread loop over samples (the
// direct convolution is conv_cpu_isa.h, included just before this file). maximize_cpu.cpp includes this file
// once per instruction set, inside a namespace that defines `V`, and inside `#pragma GCC target` for the
// wider set -- hence no include guard. Everything here has internal linkage, so no AVX-512 copy can leak into
// the AVX2 path. Activations keep kCpuPadRows zero rows before and after (kernel_params.h says why).

// The same convolution by Winograd F(3, 3) (see _winograd_matrices in speechmax/ops/maximize.py): the taps,
// padded to 3 S, are S 3-tap sub-filters at offsets 0, 3, .., 3 (S - 1); outputs come in tiles of 3 rows. Input
// window i' (rows 3 i' - pad .. + 4) is transformed once, D[a][i'] = sum_q BT[a][q] x[3 i' - pad + q]; per
// transform point a, M[a][i] = sum_s U[a][s] D[a][i + s] is an S-tap convolution over tiles -- the direct
// kernel (conv_cpu_isa.h) on pre-transformed weights; then y[3 i + v] = sum_a AT[v][a] M[a][i] with the epilogue.
// 5 S multiply-adds per 3 outputs and input channel instead of 9 S. Reads input rows up to 3 ceil(T / 3) +
// 3 (S - 1) + 4 - pad -- within the kCpuPadRows zero rows past the end (kernel_params.h).
static void conv_winograd(const Mat& m, const float* X, long ldx, int T, float* Y, long ldy, const float* bias,
                          const float* init, long ld_init, bool relu, const float* mask, long ld_mask, Work& w) {
  const int S = m.S, cin = m.cin, coutp = m.coutp, cinp = align_channels(cin);
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

// A namespace built for bf16 precision defines SM_CONV_BF16 as its bf16 convolution (conv_bf16_isa.h,
// conv_amx.h), which every matrix with bf16 weights runs on.
static void conv(const Mat& m, const float* X, long ldx, int T, float* Y, long ldy, const float* bias,
                 const float* init, long ld_init, bool relu, const float* mask, long ld_mask, Work& w) {
#ifdef SM_CONV_BF16
  if (m.wb) return SM_CONV_BF16(m, X, ldx, T, Y, ldy, bias, init, ld_init, relu, mask, ld_mask, w);
#endif
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
      float* h0g = w.h0g + (long)kCpuPadRows * n.Cp;
      float* dh0g = w.dh0g + (long)kCpuPadRows * n.Cp;
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
