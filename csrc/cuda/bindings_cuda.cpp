// Torch bindings for the CUDA kernels; compiled only where the installed torch has CUDA.
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

extern "C" cudaError_t speechmax_gated_activation_cuda(const float* a, const float* b, float* out, long n,
                                                       cudaStream_t stream);

torch::Tensor gated_activation_cuda(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.is_cuda() && b.is_cuda() && a.sizes() == b.sizes(), "gated_activation_cuda: bad inputs");
  auto af = a.contiguous().to(torch::kFloat32), bf = b.contiguous().to(torch::kFloat32);
  auto out = torch::empty_like(af);
  auto err = speechmax_gated_activation_cuda(af.data_ptr<float>(), bf.data_ptr<float>(), out.data_ptr<float>(),
                                             af.numel(), c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "gated_activation_cuda: ", cudaGetErrorString(err));
  return out.to(a.scalar_type());
}

void register_cuda_ops(pybind11::module& m) {
  m.def("gated_activation_cuda", &gated_activation_cuda, "tanh(a) * sigmoid(b) (CUDA)");
}
