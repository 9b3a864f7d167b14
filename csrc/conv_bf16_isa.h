// maximize_step's convolution in bf16 precision, the ISA-specific half: bf16 weights and inputs, fp32 products
// summed in fp32, the fp32 epilogue of conv_cpu_isa.h's micro(). maximize_cpu.cpp includes this file (after
// conv_cpu_isa.h) inside a namespace whose `V` is AVX-512 wide and has `dot(acc, w, x)` -- vdpbf16ps, or its
// exact emulation -- and inside `#pragma GCC target` for that set; hence no include guard. conv_amx.h uses the
// input conversion (rows_to_bf16) and the epilogue (store_rows) too.
//
// Layout (Mat::wb): per tap j, per pair p of inputs (cin zero-padded to kBf16K), per output o (coutp padded to
// kBf16N), the pair (w[j][2p][o], w[j][2p + 1][o]) -- one 64-byte row holds 16 outputs' pairs, which is both a
// vdpbf16ps operand and a row of an AMX B tile. Inputs are converted to bf16 once per convolution into a
// scratch copy of the rows it reads, row r = input row r - pad, channels padded to kBf16K with zeros.

// fp32 -> bf16, round to nearest even, as torch rounds (a NaN stays a quiet NaN; without this, a NaN whose
// payload is all in the low bits would round to infinity).
static inline __m256i to_bf16(__m512 v) {
  const __m512i b = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), lsb)), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(r);
}

// Rows [0, rows) of X (row 0 = the first row the convolution reads, cin floats each) -> bf16 rows of kb in xb;
// channels past cin and rows [rows, rows_total) zero.
static void rows_to_bf16(const float* X, long ldx, int rows, int cin, uint16_t* xb, int kb, int rows_total) {
  for (int r = 0; r < rows; ++r) {
    const float* x = X + r * ldx;
    uint16_t* y = xb + (long)r * kb;
    for (int c = 0; c < kb; c += 16) {
      const int n = cin - c;
      const __mmask16 k = n >= 16 ? (__mmask16)0xFFFF : n > 0 ? (__mmask16)((1u << n) - 1) : (__mmask16)0;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + c), to_bf16(_mm512_maskz_loadu_ps(k, x + c)));
    }
  }
  std::memset(xb + (long)rows * kb, 0, sizeof(uint16_t) * (size_t)(rows_total - rows) * kb);
}

// The epilogue of micro() for nt rows of 16 n16 outputs: Y[t][o] = acc[t][o] (+ bias, + init, ReLU, mask).
static void store_rows(const float* acc, long ld_acc, int nt, int n16, float* Y, long ldy, const float* bias,
                       const float* init, long ld_init, bool relu, const float* mask, long ld_mask) {
  for (int t = 0; t < nt; ++t)
    for (int v = 0; v < n16; ++v) {
      __m512 r = _mm512_loadu_ps(acc + t * ld_acc + 16 * v);
      if (bias) r = _mm512_add_ps(r, _mm512_loadu_ps(bias + 16 * v));
      if (init) r = _mm512_add_ps(r, _mm512_loadu_ps(init + t * ld_init + 16 * v));
      if (relu) r = V::relu(r);
      if (mask) r = V::keep_where_positive(r, _mm512_loadu_ps(mask + t * ld_mask + 16 * v));
      _mm512_storeu_ps(Y + t * ldy + 16 * v, r);
    }
}

// The bf16 rows the convolution reads, converted into the thread's scratch: T output rows read T + taps - 1
// input rows; rows_total (>= that) are provided, the rest zero.
static const uint16_t* bf16_input(const Mat& m, const float* X, long ldx, int T, int rows_total, Work& w) {
  const int kb = round_up(m.cin, kBf16K);
  const size_t need = (size_t)rows_total * kb;
  if (w.xb.size() < need) w.xb.resize(need);
  rows_to_bf16(X - (long)m.pad * ldx, ldx, T + m.taps - 1, m.cin, w.xb.data(), kb, rows_total);
  return w.xb.data();
}

// NT rows x NV vectors of 16 outputs by V::dot on pairs: the bf16 twin of micro().
template <int NV, int NT>
static void micro_bf16(const uint16_t* __restrict__ w, long ldw, int P, int taps, const uint16_t* X, long ldb, float* Y,
                       long ldy, const float* bias, const float* init, long ld_init, bool relu, const float* mask,
                       long ld_mask) {
  using R = typename V::reg;
  R acc[NT][NV];
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[t][v] = V::zero();
  for (int j = 0; j < taps; ++j) {
    const uint16_t* xj = X + j * ldb;
    const uint16_t* wj = w + (size_t)j * P * ldw;
    for (int p = 0; p < P; ++p) {
      R wv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) wv[v] = _mm512_castsi512_ps(_mm512_loadu_si512(wj + p * ldw + 32 * v));
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) {
        int32_t pair;
        std::memcpy(&pair, xj + t * ldb + 2 * p, sizeof pair);
        const R xb = _mm512_castsi512_ps(_mm512_set1_epi32(pair));
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[t][v] = V::dot(acc[t][v], wv[v], xb);
      }
    }
  }
  alignas(64) float out[NT][NV * 16];
  for (int t = 0; t < NT; ++t)
    for (int v = 0; v < NV; ++v) V::store(out[t] + 16 * v, acc[t][v]);
  store_rows(out[0], NV * 16, NT, NV, Y, ldy, bias, init, ld_init, relu, mask, ld_mask);
}

using MicroBf16Fn = void (*)(const uint16_t*, long, int, int, const uint16_t*, long, float*, long, const float*,
                             const float*, long, bool, const float*, long);

template <int NV, int... NTs>
static constexpr std::array<MicroBf16Fn, sizeof...(NTs)> micro_bf16_table(std::integer_sequence<int, NTs...>) {
  return {{&micro_bf16<NV, NTs + 1>...}};
}

template <int NV>
static void conv_bf16_panel(const Mat& m, const uint16_t* xb, int kb, int T, int o0, float* Y, long ldy,
                            const float* bias, const float* init, long ld_init, bool relu, const float* mask,
                            long ld_mask) {
  constexpr int tile = rows_per_tile<NV>();
  static constexpr auto table = micro_bf16_table<NV>(std::make_integer_sequence<int, tile>{});
  const long ldw = 2L * round_up(m.coutp, kBf16N);
  for (int t0 = 0; t0 < T; t0 += tile) {
    const int nt = T - t0 < tile ? T - t0 : tile;
    table[nt - 1](m.wb + 2L * o0, ldw, kb / 2, m.taps, xb + (long)t0 * kb, kb, Y + t0 * ldy + o0, ldy,
                  bias ? bias + o0 : nullptr, init ? init + t0 * ld_init + o0 : nullptr, ld_init, relu,
                  mask ? mask + t0 * ld_mask + o0 : nullptr, ld_mask);
  }
}

// One convolution in bf16 by V::dot, 64 outputs at a time (the last 16, 32 or 48); see conv_direct.
static void conv_bf16(const Mat& m, const float* X, long ldx, int T, float* Y, long ldy, const float* bias,
                      const float* init, long ld_init, bool relu, const float* mask, long ld_mask, Work& w) {
  const int kb = round_up(m.cin, kBf16K);
  const uint16_t* xb = bf16_input(m, X, ldx, T, T + m.taps - 1, w);
  for (int o0 = 0; o0 < m.coutp; o0 += 64) {
    switch ((m.coutp - o0 < 64 ? m.coutp - o0 : 64) / 16) {
      case 4: conv_bf16_panel<4>(m, xb, kb, T, o0, Y, ldy, bias, init, ld_init, relu, mask, ld_mask); break;
      case 3: conv_bf16_panel<3>(m, xb, kb, T, o0, Y, ldy, bias, init, ld_init, relu, mask, ld_mask); break;
      case 2: conv_bf16_panel<2>(m, xb, kb, T, o0, Y, ldy, bias, init, ld_init, relu, mask, ld_mask); break;
      default: conv_bf16_panel<1>(m, xb, kb, T, o0, Y, ldy, bias, init, ld_init, relu, mask, ld_mask); break;
    }
  }
}
