// Per-element math shared by the C++ CPU build and the CUDA build.
// Every function here is `SM_HD inline`, so the code the CPU tests exercise is the code nvcc compiles.
#pragma once
#include <math.h>

#if defined(__CUDACC__)
#define SM_HD __host__ __device__
#else
#define SM_HD
#endif

namespace speechmax {

SM_HD inline float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// tanh(a) * sigmoid(b): the WaveNet gate.
SM_HD inline float gate(float a, float b) { return tanhf(a) * sigmoidf_(b); }

// d/da and d/db of gate(a, b), for fused backward passes.
SM_HD inline void gate_grad(float a, float b, float* da, float* db) {
  float t = tanhf(a), s = sigmoidf_(b);
  *da = (1.0f - t * t) * s;
  *db = t * s * (1.0f - s);
}

}  // namespace speechmax
