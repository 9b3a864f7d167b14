// Declarations of the ops that bindings.cpp exposes as speechmax._C.
#pragma once
#include <torch/extension.h>

namespace speechmax {
torch::Tensor gated_activation_cpu(const torch::Tensor& a, const torch::Tensor& b);
}  // namespace speechmax
