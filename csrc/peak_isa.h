// The FMA chains of peak.cpp, compiled once per instruction set: peak.cpp includes this file inside a namespace
// that defines `V` (a register type, its loads and stores, and `dot`, the one arithmetic step), and inside
// `#pragma GCC target` for the wider sets -- hence no include guard.

// C independent chains acc[c] = V::dot(acc[c], x, y), n steps each, all held in registers: nothing but the
// arithmetic units bounds the loop. start: C x V::W floats (chain-major), x and y: V::W floats (bit patterns
// of bf16 pairs for the bf16 dot); out receives the C x V::W accumulators -- the work's only result, so the
// compiler must do all of it (and, without -ffast-math, cannot fold n additions of x*y into one product).
template <int C>
static void run_chains(const float* start, const float* x, const float* y, int64_t n, float* out) {
  typename V::reg acc[C];
  const typename V::reg xv = V::load(x), yv = V::load(y);
#pragma GCC unroll 32
  for (int c = 0; c < C; ++c) acc[c] = V::load(start + c * V::W);
  for (int64_t i = 0; i < n; ++i) {
#pragma GCC unroll 32
    for (int c = 0; c < C; ++c) acc[c] = V::dot(acc[c], xv, yv);
  }
#pragma GCC unroll 32
  for (int c = 0; c < C; ++c) V::store(out + c * V::W, acc[c]);
}
