// Per-sample math of one activation-maximization ascent step, shared by the fused CPU kernel
// (maximize_cpu.cpp) and the CUDA kernel (cuda/maximize.cu): the objective and its gradient at the logits,
// the ReLU derivative, the input normalisation, and the two update rules. The matrix products around them
// are backend-specific; everything between them is here, once.
//
// Functions are `static inline`: every translation unit (and each ISA-specific region of maximize_cpu.cpp)
// keeps its own copy, so an AVX-512 build of one can never be linked into the AVX2 path.
#pragma once
#include <math.h>

#include "sm_math.h"

#define MX_FN SM_HD static inline

namespace speechmax {
namespace mx {

// What the step climbs (speechmax/ops/maximize.py passes the same numbers).
enum Objective { kProb = 0, kLogit = 1, kUnit = 2 };
enum Optimizer { kRmsNormalized = 0, kAdam = 1 };

constexpr float kRmsEps = 1e-5f;  // the seed paper's g / (rms(g) + 1e-5)

// Gradient through a ReLU whose output was y: torch's convention, zero where the output is zero.
MX_FN float relu_grad(float g, float y) { return y > 0.0f ? g : 0.0f; }

// NaN passes through (x < 0 is false for NaN): a start whose activations overflowed must reach the objective
// as NaN, so the caller stops it as autograd does, instead of a ReLU silently turning it into 0.
MX_FN float relu(float x) { return x < 0.0f ? 0.0f : x; }

// Objective at the logits (n classes) and its gradient dJ/dlogits: the softmax probability of `target`
// (dJ/dl_i = p_t (delta_it - p_i)), or the raw logit (dJ/dl_i = delta_it). Non-finite logits give a NaN
// objective, which the caller reports instead of stepping.
MX_FN float class_objective(const float* logits, int n, int target, int kind, float* dlogits) {
  if (kind != kProb) {
    for (int i = 0; i < n; ++i) dlogits[i] = i == target ? 1.0f : 0.0f;
    return logits[target];
  }
  float mx = logits[0];
  for (int i = 1; i < n; ++i) mx = logits[i] > mx ? logits[i] : mx;
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += expf(logits[i] - mx);
  const float pt = expf(logits[target] - mx) / s;
  for (int i = 0; i < n; ++i) {
    const float pi = expf(logits[i] - mx) / s;
    dlogits[i] = pt * ((i == target ? 1.0f : 0.0f) - pi);
  }
  return pt;
}

// Gradient of -weight * mean(v^2) over n elements (the L2 penalty), added to the objective's gradient.
MX_FN float l2_grad(float v, float weight, int n) { return -2.0f * weight * v / (float)n; }

// The seed paper's rms-normalised step: lr / (sqrt(mean(g^2)) + 1e-5), from the sum of squares over n.
MX_FN float rms_step_scale(double sumsq, int n, float lr) {
  return lr / ((float)sqrt(sumsq / (double)n) + kRmsEps);
}

// One Adam ascent update of one element; m and v (the caller's per-sample state) are updated in place.
// c1 = 1 - beta1^t and c2 = 1 - beta2^t are the bias corrections of step t (1-based).
MX_FN float adam_delta(float g, float* m, float* v, float beta1, float beta2, float c1, float c2, float eps,
                       float lr) {
  *m = beta1 * *m + (1.0f - beta1) * g;
  *v = beta2 * *v + (1.0f - beta2) * g * g;
  return lr * (*m / c1) / (sqrtf(*v / c2) + eps);
}

}  // namespace mx
}  // namespace speechmax
