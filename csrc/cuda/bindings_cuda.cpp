// Torch bindings of the CUDA kernels (gated.cu, wavenet.cu, maximize.cu), registered from csrc/bindings.cpp;
// compiled only where the installed torch has CUDA. Each op takes the same params struct and named tensors as
// its CPU twin in speechmax._C (threads and isa aside), so speechmax/ops/*.py calls both alike.
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "../kernel_params.h"
#include "wavenet_args.h"

using speechmax::MaximizeParams;
using speechmax::WavenetParams;

extern "C" cudaError_t speechmax_gated_activation_cuda(const float* a, const float* b, float* out, long n,
                                                       cudaStream_t stream);
extern "C" cudaError_t speechmax_wavenet_sample_cuda(const SpeechmaxWavenetCudaArgs* a, cudaStream_t stream);
extern "C" long speechmax_maximize_scratch_floats(const MaximizeParams* p);
extern "C" cudaError_t speechmax_maximize_step_cuda(const MaximizeParams* p, const float* weights,
                                                    const int64_t* desc, int n_mats, const float* norm, float* x,
                                                    long B, long nvar, const int64_t* targets, float* adam_m,
                                                    float* adam_v, float* obj_out, float* grad_out, float* scratch,
                                                    int blocks, cudaStream_t stream);

namespace {

torch::Tensor gated_activation_cuda(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.is_cuda() && b.is_cuda() && a.sizes() == b.sizes(), "gated_activation_cuda: bad inputs");
  auto af = a.contiguous().to(torch::kFloat32), bf = b.contiguous().to(torch::kFloat32);
  auto out = torch::empty_like(af);
  auto err = speechmax_gated_activation_cuda(af.data_ptr<float>(), bf.data_ptr<float>(), out.data_ptr<float>(),
                                             af.numel(), c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "gated_activation_cuda: ", cudaGetErrorString(err));
  return out.to(a.scalar_type());
}

void check_cuda(const torch::Tensor& t, torch::ScalarType dt, const char* op, const char* name, bool rows = false) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be on the GPU");
  TORCH_CHECK(t.scalar_type() == dt, op, ": ", name, " must be ", dt, ", got ", t.scalar_type());
  if (rows) {
    TORCH_CHECK(t.stride(-1) == 1 || t.size(-1) <= 1, op, ": ", name, " must have contiguous rows");
  } else {
    TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
  }
}

// fp32 weights only.
void wavenet_sample_cuda(const WavenetParams& p, const torch::Tensor& weights, const torch::Tensor& biases,
                         const torch::Tensor& desc, const torch::Tensor& embed, const torch::Tensor& decode,
                         const torch::Tensor& feats, const torch::Tensor& uniforms,
                         const c10::optional<torch::Tensor>& teacher, torch::Tensor& rings, torch::Tensor& prev,
                         torch::Tensor& classes, const c10::optional<torch::Tensor>& wave,
                         const c10::optional<torch::Tensor>& logits) {
  constexpr const char* op = "wavenet_sample_cuda";
  SpeechmaxWavenetCudaArgs a{};
  TORCH_CHECK(speechmax::wavenet_shape(p, &a), op, ": params describe no WaveNet the sampler covers (", p.n_layers,
              " layers, at most ", speechmax::kMaxWavenetLayers, "; dilations >= 1, an even gate width)");
  TORCH_CHECK(weights.scalar_type() == torch::kFloat32, op, ": fp32 weights only (backend cuda)");
  check_cuda(weights, torch::kFloat32, op, "weights");
  check_cuda(biases, torch::kFloat32, op, "biases");
  check_cuda(desc, torch::kInt64, op, "desc");
  check_cuda(embed, torch::kFloat32, op, "embed");
  check_cuda(decode, torch::kFloat32, op, "decode");
  check_cuda(feats, torch::kFloat32, op, "feats");
  check_cuda(uniforms, torch::kFloat32, op, "uniforms", true);
  check_cuda(classes, torch::kInt64, op, "classes", true);
  check_cuda(rings, torch::kFloat32, op, "rings");
  check_cuda(prev, torch::kInt64, op, "prev");
  const int64_t B = feats.size(0), T = classes.size(1);
  TORCH_CHECK(feats.dim() == 3 && feats.size(2) == a.C, op, ": feats must be (batch, frames, ", a.C, ")");
  TORCH_CHECK(uniforms.sizes() == classes.sizes() && classes.size(0) == B, op, ": uniforms and classes must be (",
              B, ", samples)");
  TORCH_CHECK(rings.dim() == 3 && rings.size(0) == B && rings.size(1) == a.ring_len && rings.size(2) == a.R,
              op, ": rings must be (", B, ", ", a.ring_len, ", ", a.R, ")");
  TORCH_CHECK(prev.numel() == B, op, ": prev must be (", B, ")");
  if (teacher) check_cuda(*teacher, torch::kInt64, op, "teacher", true);
  if (wave) check_cuda(*wave, torch::kFloat32, op, "wave", true);
  if (logits) check_cuda(*logits, torch::kFloat32, op, "logits", true);
  a.weights = weights.data_ptr<float>();
  a.biases = biases.data_ptr<float>();
  a.desc = desc.data_ptr<int64_t>();
  a.embed = embed.data_ptr<float>();
  a.decode = decode.data_ptr<float>();
  a.B = (int)B;
  a.T = T;
  a.F = feats.size(1);
  a.step = p.step;
  a.t0 = p.t0;
  a.temperature = (float)p.temperature;
  a.feats = feats.data_ptr<float>();
  a.uniforms = uniforms.data_ptr<float>();
  a.teacher = teacher ? teacher->data_ptr<int64_t>() : nullptr;
  a.rings = rings.data_ptr<float>();
  a.prev = prev.data_ptr<int64_t>();
  a.classes = classes.data_ptr<int64_t>();
  a.wave = wave ? wave->data_ptr<float>() : nullptr;
  a.logits = logits ? logits->data_ptr<float>() : nullptr;
  a.ld_u = uniforms.stride(0);
  a.ld_teacher = teacher ? teacher->stride(0) : 0;
  a.ld_classes = classes.stride(0);
  a.ld_wave = wave ? wave->stride(0) : 0;
  a.ld_logits = logits ? logits->stride(0) : 0;
  auto err = speechmax_wavenet_sample_cuda(&a, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, op, ": ", cudaGetErrorString(err));
}

void check_gpu_f32(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(), "maximize_step_cuda: ", name,
              " must be a contiguous float32 GPU tensor");
}

void maximize_step_cuda(const MaximizeParams& p, const torch::Tensor& weights, const torch::Tensor& desc,
                        const torch::Tensor& norm, torch::Tensor& x, const torch::Tensor& targets,
                        torch::Tensor& obj_out, const c10::optional<torch::Tensor>& grad_out,
                        const c10::optional<torch::Tensor>& adam_m, const c10::optional<torch::Tensor>& adam_v) {
  check_gpu_f32(weights, "weights");
  check_gpu_f32(norm, "norm");
  check_gpu_f32(x, "x");
  check_gpu_f32(obj_out, "objective");
  TORCH_CHECK(targets.is_cuda() && targets.scalar_type() == torch::kInt64, "maximize_step_cuda: targets must be int64 on the GPU");
  const auto desc_host = desc.to(torch::kCPU).to(torch::kInt64).contiguous();
  const int64_t B = x.size(0);
  const int64_t nvar = B ? x.numel() / B : 0;
  const long per_block = speechmax_maximize_scratch_floats(&p);
  TORCH_CHECK(per_block > 0, "maximize_step_cuda: the CUDA kernel does not cover this architecture");
  float *m = nullptr, *v = nullptr, *g = nullptr;
  if (p.optimizer == 1 && p.update) {
    TORCH_CHECK(adam_m.has_value() && adam_v.has_value() && p.adam_step >= 1,
                "maximize_step_cuda: Adam needs m, v, adam_step >= 1");
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
  auto err = speechmax_maximize_step_cuda(&p, weights.data_ptr<float>(), desc_host.data_ptr<int64_t>(),
                                          (int)desc_host.size(0), norm.data_ptr<float>(), x.data_ptr<float>(),
                                          (long)B, (long)nvar, targets.data_ptr<int64_t>(), m, v,
                                          obj_out.data_ptr<float>(), g, scratch.data_ptr<float>(), blocks,
                                          c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "maximize_step_cuda: ", cudaGetErrorString(err));
}

}  // namespace

void register_cuda_ops(pybind11::module& m) {
  namespace py = pybind11;
  m.def("gated_activation_cuda", &gated_activation_cuda, "tanh(a) * sigmoid(b) (CUDA)");
  m.def("wavenet_sample_cuda", &wavenet_sample_cuda,
        "Fused WaveNet sampler (CUDA, one persistent block per item); updates rings/prev in place",
        py::arg("params"), py::kw_only(), py::arg("weights"), py::arg("biases"), py::arg("desc"), py::arg("embed"),
        py::arg("decode"), py::arg("feats"), py::arg("uniforms"), py::arg("teacher") = py::none(), py::arg("rings"),
        py::arg("prev"), py::arg("classes"), py::arg("wave") = py::none(), py::arg("logits") = py::none());
  m.def("maximize_step_cuda", &maximize_step_cuda, "Fused activation-maximization step (CUDA, a block per sample)",
        py::arg("params"), py::kw_only(), py::arg("weights"), py::arg("desc"), py::arg("norm"), py::arg("x"),
        py::arg("targets"), py::arg("objective_out"), py::arg("grad_out") = py::none(),
        py::arg("adam_m") = py::none(), py::arg("adam_v") = py::none());
}
