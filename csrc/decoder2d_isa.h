// The seed paper's 2-D decoder (prior arch "paper": ConvTranspose2d(kernel 4, stride 2, padding 1) layers with
// ReLU between them), one sample at a time -- the ISA-specific half. decoder2d.cpp includes this file once per
// instruction set, right after conv_cpu_isa.h (it runs its convolutions with conv_direct), hence no include
// guard.
//
// Images are channels-last: pixel p = y * W + x is one row of C floats (C a multiple of 16; the last layer has
// one channel). A layer's forward is a 1x1 GEMM per input pixel into the outputs of all 16 kernel positions
// (cols: H W rows of 16 Cout), then col2im: position (ky, kx) of input (iy, ix) adds into output pixel
// (2 iy - 1 + ky, 2 ix - 1 + kx). Its backward is the reverse: im2col of the output gradient, then a 1x1 GEMM
// with the transposed weights whose epilogue applies the ReLU mask of the layer's input. Per output pixel and
// channel that is the same 4 (of 16) multiply-adds a direct transposed convolution does, and no zero is
// multiplied -- for the 1-channel last layer, the 16 positions fill a whole vector where a direct kernel
// would pad one output channel to 16.

// Forward of one sample: h0 (H0 W0 x C0, post-ReLU) -> feats (M x T) = crop(last layer) * scale + shift (the
// prior's de-normalisation); the intermediate activations (post-ReLU) go to `acts` at d.act_off[l].
static void dec2d_forward(const Dec2d& d, const float* h0, float* acts, float* feats, float* cols, float* img) {
  const float* x = h0;
  int H = d.H0, W = d.W0;
  for (int l = 0; l < d.nl; ++l) {
    const int cin = d.ch[l], cout = d.ch[l + 1], OH = 2 * H, OW = 2 * W;
    const bool last = l + 1 == d.nl;
    const Mat& m = d.fwd[l];
    conv_direct(m, x, cin, H * W, cols, m.coutp, nullptr, nullptr, 0, false, nullptr, 0);
    float* y = last ? img : acts + d.act_off[l];
    for (long p = 0; p < (long)OH * OW; ++p)
#pragma omp simd
      for (int c = 0; c < cout; ++c) y[p * cout + c] = m.b[c];
    for (int iy = 0; iy < H; ++iy)
      for (int ix = 0; ix < W; ++ix) {
        const float* cp = cols + (long)(iy * W + ix) * m.coutp;
        for (int ky = 0; ky < 4; ++ky) {
          const int oy = 2 * iy - 1 + ky;
          if (oy < 0 || oy >= OH) continue;
          for (int kx = 0; kx < 4; ++kx) {
            const int ox = 2 * ix - 1 + kx;
            if (ox < 0 || ox >= OW) continue;
            float* yo = y + ((long)oy * OW + ox) * cout;
            const float* ck = cp + (ky * 4 + kx) * cout;
#pragma omp simd
            for (int c = 0; c < cout; ++c) yo[c] += ck[c];
          }
        }
      }
    if (!last)
#pragma omp simd
      for (long i = 0; i < (long)OH * OW * cout; ++i) y[i] = mx::relu(y[i]);
    x = y, H = OH, W = OW;
  }
  for (int r = 0; r < d.M; ++r) {
    const float a = d.scale[r], b = d.shift[r];
#pragma omp simd
    for (int t = 0; t < d.T; ++t) feats[(long)r * d.T + t] = img[(long)r * W + t] * a + b;
  }
}

// Backward of one sample: gf (M x T, the gradient at feats) -> g_h0 (H0 W0 x C0), through the ReLU masks of
// h0 and of the saved activations. `img` holds the last layer's output gradient, `gbuf` the others'.
static void dec2d_backward(const Dec2d& d, const float* h0, const float* acts, const float* gf, float* g_h0,
                           float* cols, float* img, float* gbuf0, float* gbuf1) {
  int OH = d.H0 << d.nl, OW = d.W0 << d.nl;
  std::fill(img, img + (long)OH * OW, 0.0f);
  for (int r = 0; r < d.M; ++r) {
    const float a = d.scale[r];
#pragma omp simd
    for (int t = 0; t < d.T; ++t) img[(long)r * OW + t] = gf[(long)r * d.T + t] * a;
  }
  const float* g = img;
  for (int l = d.nl - 1; l >= 0; --l) {
    const int cin = d.ch[l], cout = d.ch[l + 1], H = OH / 2, W = OW / 2, K = 16 * cout;
    for (int iy = 0; iy < H; ++iy)
      for (int ix = 0; ix < W; ++ix) {
        float* cp = cols + (long)(iy * W + ix) * K;
        for (int ky = 0; ky < 4; ++ky) {
          const int oy = 2 * iy - 1 + ky;
          for (int kx = 0; kx < 4; ++kx) {
            const int ox = 2 * ix - 1 + kx;
            float* ck = cp + (ky * 4 + kx) * cout;
            if (oy < 0 || oy >= OH || ox < 0 || ox >= OW) {
              std::fill(ck, ck + cout, 0.0f);
              continue;
            }
            const float* go = g + ((long)oy * OW + ox) * cout;
#pragma omp simd
            for (int c = 0; c < cout; ++c) ck[c] = go[c];
          }
        }
      }
    const float* mask = l == 0 ? h0 : acts + d.act_off[l - 1];
    float* out = l == 0 ? g_h0 : (l % 2 ? gbuf1 : gbuf0);
    conv_direct(d.bwd[l], cols, K, H * W, out, cin, nullptr, nullptr, 0, false, mask, cin);
    g = out, OH = H, OW = W;
  }
}

// Samples [s0, s1): forward (and the activations, if acts) or backward, per the job.
static void dec2d_run(const Dec2d& d, const Dec2dJob& job, long s0, long s1, std::vector<float>& scratch) {
  const long cols = d.cols_floats, img = (long)(d.H0 << d.nl) * (d.W0 << d.nl), gb = d.gbuf_floats;
  const long need = cols + img + 2 * gb + (job.acts ? 0 : d.acts_floats) + 64;
  if ((long)scratch.size() < need) scratch.assign(need, 0.0f);
  float* base = scratch.data();
  base += (16 - ((uintptr_t)base / sizeof(float)) % 16) % 16;
  float* c = base;
  float* im = c + (cols + 15) / 16 * 16;
  float* g0 = im + (img + 15) / 16 * 16;
  float* g1 = g0 + (gb + 15) / 16 * 16;
  float* own = g1 + (gb + 15) / 16 * 16;  // the activations when the caller keeps none
  const long h0n = (long)d.H0 * d.W0 * d.ch[0], fn = (long)d.M * d.T;
  for (long s = s0; s < s1; ++s) {
    float* a = job.acts ? job.acts + s * d.acts_floats : own;
    if (job.backward)
      dec2d_backward(d, job.h0 + s * h0n, a, job.gf + s * fn, job.g_h0 + s * h0n, c, im, g0, g1);
    else
      dec2d_forward(d, job.h0 + s * h0n, a, job.feats + s * fn, c, im);
  }
}
