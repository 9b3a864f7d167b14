// Torch bindings for the CUDA kernels; compiled only where the installed torch has CUDA.
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include "wavenet_args.h"

extern "C" cudaError_t speechmax_gated_activation_cuda(const float* a, const float* b, float* out, long n,
                                                       cudaStream_t stream);
extern "C" cudaError_t speechmax_wavenet_sample_cuda(const SpeechmaxWavenetCudaArgs* a, cudaStream_t stream);

torch::Tensor gated_activation_cuda(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.is_cuda() && b.is_cuda() && a.sizes() == b.sizes(), "gated_activation_cuda: bad inputs");
  auto af = a.contiguous().to(torch::kFloat32), bf = b.contiguous().to(torch::kFloat32);
  auto out = torch::empty_like(af);
  auto err = speechmax_gated_activation_cuda(af.data_ptr<float>(), bf.data_ptr<float>(), out.data_ptr<float>(),
                                             af.numel(), c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "gated_activation_cuda: ", cudaGetErrorString(err));
  return out.to(a.scalar_type());
}

namespace {
void check_cuda(const torch::Tensor& t, torch::ScalarType dt, const char* name, bool rows = false) {
  TORCH_CHECK(t.is_cuda(), "wavenet_sample_cuda: ", name, " must be on the GPU");
  TORCH_CHECK(t.scalar_type() == dt, "wavenet_sample_cuda: ", name, " must be ", dt, ", got ", t.scalar_type());
  if (rows) {
    TORCH_CHECK(t.stride(-1) == 1 || t.size(-1) <= 1, "wavenet_sample_cuda: ", name, " must have contiguous rows");
  } else {
    TORCH_CHECK(t.is_contiguous(), "wavenet_sample_cuda: ", name, " must be contiguous");
  }
}
}  // namespace

// Same arguments as the CPU op speechmax._C.wavenet_sample (see csrc/wavenet_cpu.cpp), fp32 weights only.
void wavenet_sample_cuda(const torch::Tensor& weights, const torch::Tensor& biases, const torch::Tensor& desc,
                         const torch::Tensor& embed, const std::vector<int64_t>& dims,
                         const std::vector<int64_t>& dilations, const torch::Tensor& feats,
                         const torch::Tensor& uniforms, const c10::optional<torch::Tensor>& teacher,
                         torch::Tensor& rings, torch::Tensor& prev, int64_t step, int64_t t0, double temperature,
                         torch::Tensor& classes, const c10::optional<torch::Tensor>& wave,
                         const c10::optional<torch::Tensor>& logits, const torch::Tensor& decode) {
  TORCH_CHECK(dims.size() == 14, "wavenet_sample_cuda: dims must have 14 entries");
  SpeechmaxWavenetCudaArgs a{};
  int* dm[14] = {&a.R, &a.G, &a.S, &a.O, &a.NC, &a.C, &a.hop, &a.L, &a.Rp, &a.Ghp, &a.Sp, &a.Op, &a.NCp, &a.Cp};
  for (int i = 0; i < 14; ++i) *dm[i] = (int)dims[i];
  TORCH_CHECK((int)dilations.size() == a.L, "wavenet_sample_cuda: ", a.L, " layers but ", dilations.size(), " dilations");
  std::vector<int> dil(dilations.begin(), dilations.end()), off(a.L);
  for (int l = 0; l < a.L; ++l) off[l] = a.ring_len, a.ring_len += dil[l];
  TORCH_CHECK(weights.scalar_type() == torch::kFloat32, "wavenet_sample_cuda: fp32 weights only (backend cuda)");
  check_cuda(weights, torch::kFloat32, "weights");
  check_cuda(biases, torch::kFloat32, "biases");
  check_cuda(desc, torch::kInt64, "desc");
  check_cuda(embed, torch::kFloat32, "embed");
  check_cuda(decode, torch::kFloat32, "decode");
  check_cuda(feats, torch::kFloat32, "feats");
  check_cuda(uniforms, torch::kFloat32, "uniforms", true);
  check_cuda(classes, torch::kInt64, "classes", true);
  check_cuda(rings, torch::kFloat32, "rings");
  check_cuda(prev, torch::kInt64, "prev");
  const int64_t B = feats.size(0), T = classes.size(1);
  TORCH_CHECK(feats.dim() == 3 && feats.size(2) == a.C, "wavenet_sample_cuda: feats must be (batch, frames, ", a.C, ")");
  TORCH_CHECK(uniforms.sizes() == classes.sizes() && classes.size(0) == B, "wavenet_sample_cuda: uniforms and classes must be (", B, ", samples)");
  TORCH_CHECK(rings.dim() == 3 && rings.size(0) == B && rings.size(1) == a.ring_len && rings.size(2) == a.R,
              "wavenet_sample_cuda: rings must be (", B, ", ", a.ring_len, ", ", a.R, ")");
  TORCH_CHECK(prev.numel() == B, "wavenet_sample_cuda: prev must be (", B, ")");
  if (teacher) check_cuda(*teacher, torch::kInt64, "teacher", true);
  if (wave) check_cuda(*wave, torch::kFloat32, "wave", true);
  if (logits) check_cuda(*logits, torch::kFloat32, "logits", true);
  auto dil_d = torch::tensor(dil, torch::kInt32).to(weights.device()), off_d = torch::tensor(off, torch::kInt32).to(weights.device());
  a.weights = weights.data_ptr<float>();
  a.biases = biases.data_ptr<float>();
  a.desc = desc.data_ptr<int64_t>();
  a.embed = embed.data_ptr<float>();
  a.decode = decode.data_ptr<float>();
  a.dilations = dil_d.data_ptr<int>();
  a.ring_off = off_d.data_ptr<int>();
  a.B = (int)B;
  a.T = T;
  a.F = feats.size(1);
  a.step = step;
  a.t0 = t0;
  a.temperature = (float)temperature;
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
  TORCH_CHECK(err == cudaSuccess, "wavenet_sample_cuda: ", cudaGetErrorString(err));
}

void register_cuda_ops(pybind11::module& m) {
  m.def("gated_activation_cuda", &gated_activation_cuda, "tanh(a) * sigmoid(b) (CUDA)");
  m.def("wavenet_sample_cuda", &wavenet_sample_cuda,
        "Fused WaveNet sampler (CUDA, one persistent block per item); updates rings/prev in place",
        pybind11::arg("weights"), pybind11::arg("biases"), pybind11::arg("desc"), pybind11::arg("embed"),
        pybind11::arg("dims"), pybind11::arg("dilations"), pybind11::arg("feats"), pybind11::arg("uniforms"),
        pybind11::arg("teacher"), pybind11::arg("rings"), pybind11::arg("prev"), pybind11::arg("step"),
        pybind11::arg("t0"), pybind11::arg("temperature"), pybind11::arg("classes"), pybind11::arg("wave"),
        pybind11::arg("logits"), pybind11::arg("decode"));
}
