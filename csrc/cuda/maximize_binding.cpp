// Torch binding of the CUDA ascent step (maximize.cu); compiled only where the installed torch has CUDA, and
// registered from csrc/bindings.cpp. Same arguments as the CPU op speechmax._C.maximize_step (threads and isa
// aside): speechmax/ops/maximize.py calls both.
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

extern "C" long speechmax_maximize_scratch_floats(const int64_t* dims, int n_dims);
extern "C" cudaError_t speechmax_maximize_step_cuda(
    const float* weights, const int64_t* desc, int n_mats, const int64_t* dims, int n_dims, const float* norm,
    float* x, long B, long nvar, const int64_t* targets, int objective, int level, int unit, int optimizer, float lr,
    float l2, float* adam_m, float* adam_v, float beta1, float beta2, float eps, float c1, float c2, float* obj_out,
    float* grad_out, int update, float* scratch, int blocks, cudaStream_t stream);

namespace {

void check_gpu_f32(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(), "maximize_step_cuda: ", name,
              " must be a contiguous float32 GPU tensor");
}

void maximize_step_cuda(const torch::Tensor& weights, const torch::Tensor& desc, const std::vector<int64_t>& dims,
                        const torch::Tensor& norm, torch::Tensor& x, const torch::Tensor& targets, int64_t objective,
                        int64_t level, int64_t unit, int64_t optimizer, double lr, double l2,
                        const c10::optional<torch::Tensor>& adam_m, const c10::optional<torch::Tensor>& adam_v,
                        int64_t adam_step, double beta1, double beta2, double eps, torch::Tensor& obj_out,
                        const c10::optional<torch::Tensor>& grad_out, bool update) {
  check_gpu_f32(weights, "weights");
  check_gpu_f32(norm, "norm");
  check_gpu_f32(x, "x");
  check_gpu_f32(obj_out, "objective");
  TORCH_CHECK(targets.is_cuda() && targets.scalar_type() == torch::kInt64, "maximize_step_cuda: targets must be int64 on the GPU");
  const auto desc_host = desc.to(torch::kCPU).to(torch::kInt64).contiguous();
  const int64_t B = x.size(0);
  const int64_t nvar = B ? x.numel() / B : 0;
  const long per_block = speechmax_maximize_scratch_floats(dims.data(), (int)dims.size());
  TORCH_CHECK(per_block > 0, "maximize_step_cuda: the CUDA kernel does not cover this architecture");
  float *m = nullptr, *v = nullptr, *g = nullptr;
  if (optimizer == 1 && update) {
    TORCH_CHECK(adam_m.has_value() && adam_v.has_value() && adam_step >= 1, "maximize_step_cuda: Adam needs m, v, step >= 1");
    check_gpu_f32(*adam_m, "adam m");
    check_gpu_f32(*adam_v, "adam v");
    m = adam_m->data_ptr<float>();
    v = adam_v->data_ptr<float>();
  }
  if (grad_out.has_value()) {
    check_gpu_f32(*grad_out, "grad");
    g = grad_out->data_ptr<float>();
  }
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, x.get_device());
  const int blocks = (int)std::max<int64_t>(1, std::min<int64_t>(B, 4 * (int64_t)std::max(sms, 1)));
  auto scratch = torch::empty({(int64_t)blocks * per_block}, x.options());
  const double c1 = 1.0 - std::pow(beta1, (double)adam_step), c2 = 1.0 - std::pow(beta2, (double)adam_step);
  auto err = speechmax_maximize_step_cuda(
      weights.data_ptr<float>(), desc_host.data_ptr<int64_t>(), (int)desc_host.size(0), dims.data(), (int)dims.size(),
      norm.data_ptr<float>(), x.data_ptr<float>(), (long)B, (long)nvar, targets.data_ptr<int64_t>(), (int)objective,
      (int)level, (int)unit, (int)optimizer, (float)lr, (float)l2, m, v, (float)beta1, (float)beta2, (float)eps,
      (float)c1, (float)c2, obj_out.data_ptr<float>(), g, update ? 1 : 0, scratch.data_ptr<float>(), blocks,
      c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "maximize_step_cuda: ", cudaGetErrorString(err));
}

}  // namespace

void register_maximize_cuda(pybind11::module& m) {
  m.def("maximize_step_cuda", &maximize_step_cuda, "Fused activation-maximization step (CUDA, a block per sample)",
        py::arg("weights"), py::arg("desc"), py::arg("dims"), py::arg("norm"), py::arg("x"), py::arg("targets"),
        py::arg("objective"), py::arg("level"), py::arg("unit"), py::arg("optimizer"), py::arg("lr"),
        py::arg("l2"), py::arg("adam_m"), py::arg("adam_v"), py::arg("adam_step"), py::arg("beta1"),
        py::arg("beta2"), py::arg("eps"), py::arg("objective_out"), py::arg("grad_out"), py::arg("update"));
}
