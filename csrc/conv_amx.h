// maximize_step's convolution in bf16 precision on AMX tiles: the same arithmetic as conv_bf16() (bf16 weights
// and inputs, products summed in fp32) with TDPBF16PS, which multiplies a 16 x 32 bf16 tile by a 32 x 16 one
// into a 16 x 16 fp32 tile. maximize_cpu.cpp includes this file after conv_bf16_isa.h (input conversion,
// epilogue, layout) inside `#pragma GCC target("amx-tile,amx-bf16,...")`; hence no include guard.
//
// Tiles: 0-3 accumulate a block of 32 output rows x 32 outputs (two row tiles x two column tiles), 4-5 hold
// input rows (A: 16 rows x 32 channels of one tap), 6-7 weights (B: 16 input pairs x 16 outputs, a slice of
// Mat::wb as it is laid out). An output row t of tap j reads input row t + j: the A tile of tap j is the
// scratch rows shifted by j, so the im2col matrix is never built, as in conv_direct.

static void conv_amx(const Mat& m, const float* X, long ldx, int T, float* Y, long ldy, const float* bias,
                     const float* init, long ld_init, bool relu, const float* mask, long ld_mask, Work& w) {
  const int kb = round_up(m.cin, kBf16K), nb = round_up(m.coutp, kBf16N), P = kb / 2;
  const int T32 = round_up(T, 32);
  const uint16_t* xb = bf16_input(m, X, ldx, T, T32 + m.taps - 1, w);
  const TileConfig cfg = full_tiles();  // amx.h
  _tile_loadconfig(&cfg);
  alignas(64) float acc[32 * 32];
  const long lda = 2L * kb, ldb = 4L * nb;  // bytes between rows of A (input rows) and of B (input pairs)
  // outputs outer: one block's weights (taps x kb x 32 bf16, 37 KB for 64 inputs and 9 taps) stay in L1 while
  // every block of rows uses them; the input rows (kb x T32 bf16) are as small
  for (int o0 = 0; o0 < m.coutp; o0 += 32) {
  for (int t0 = 0; t0 < T; t0 += 32) {
    const bool two = T - t0 > 16;  // a last block of at most 16 rows needs one row of tiles
      _tile_zero(0);
      _tile_zero(1);
      if (two) {
        _tile_zero(2);
        _tile_zero(3);
      }
      for (int j = 0; j < m.taps; ++j) {
        const uint16_t* a = xb + (long)(t0 + j) * kb;
        const uint16_t* b = m.wb + ((long)j * P * nb + o0) * 2;
        // each product issued as soon as its two tiles are loaded (the order oneDNN's AMX kernels use)
        for (int k = 0; k < kb; k += 32) {
          _tile_loadd(4, a + k, lda);
          _tile_loadd(6, b + (long)k * nb, ldb);
          _tile_dpbf16ps(0, 4, 6);
          _tile_loadd(7, b + (long)k * nb + 32, ldb);
          _tile_dpbf16ps(1, 4, 7);
          if (two) {
            _tile_loadd(5, a + 16L * kb + k, lda);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
          }
        }
      }
      _tile_stored(0, acc, 128);
      _tile_stored(1, acc + 16, 128);
      if (two) {
        _tile_stored(2, acc + 16 * 32, 128);
        _tile_stored(3, acc + 16 * 32 + 16, 128);
      }
      const int nt = T - t0 < 32 ? T - t0 : 32;
      const int n16 = (m.coutp - o0 < 32 ? m.coutp - o0 : 32) / 16;
      store_rows(acc, 32, nt, n16, Y + t0 * ldy + o0, ldy, bias ? bias + o0 : nullptr,
                 init ? init + t0 * ld_init + o0 : nullptr, ld_init, relu, mask ? mask + t0 * ld_mask + o0 : nullptr,
                 ld_mask);
    }
  }
  _tile_release();
}
