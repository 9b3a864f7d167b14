// CPU gated activation: out = tanh(a) * sigmoid(b), elementwise, OpenMP over the elements.
#include <torch/extension.h>
#include "sm_math.h"
#include "ops.h"

namespace speechmax {

namespace {
template <typename T>
void gated_loop(const T* a, const T* b, T* out, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (sizeof(T) == 4) out[i] = gate(a[i], b[i]);
    else out[i] = std::tanh(a[i]) / (1.0 + std::exp(-b[i]));
  }
}
}  // namespace

torch::Tensor gated_activation_cpu(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), "gated_activation: tensors must be on the CPU");
  TORCH_CHECK(a.sizes() == b.sizes(), "gated_activation: a and b must have the same shape, got ",
              a.sizes(), " and ", b.sizes());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "gated_activation: a and b must share a dtype, got ",
              a.scalar_type(), " and ", b.scalar_type());
  const auto dt = a.scalar_type();
  TORCH_CHECK(dt == torch::kFloat32 || dt == torch::kFloat64 || dt == torch::kBFloat16 || dt == torch::kFloat16,
              "gated_activation: unsupported dtype ", dt);
  // Half types compute in fp32 and round once at the end.
  const auto compute = dt == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  auto ac = a.contiguous().to(compute), bc = b.contiguous().to(compute);
  auto out = torch::empty_like(ac);
  {
    pybind11::gil_scoped_release no_gil;
    if (compute == torch::kFloat64)
      gated_loop(ac.data_ptr<double>(), bc.data_ptr<double>(), out.data_ptr<double>(), ac.numel());
    else
      gated_loop(ac.data_ptr<float>(), bc.data_ptr<float>(), out.data_ptr<float>(), ac.numel());
  }
  return out.to(dt);
}

}  // namespace speechmax
