// Declarations of the ops that bindings.cpp exposes as speechmax._C. A kernel entry point takes its params
// struct (kernel_params.h: shapes and scalars), then named tensors, then the execution choices threads and isa.
#pragma once
#include <torch/extension.h>

#include "kernel_params.h"

namespace speechmax {
torch::Tensor gated_activation_cpu(const torch::Tensor& a, const torch::Tensor& b);
// The gate for training, fused (gate_train.cpp): h (N, G) -> {z, tanh, sigmoid}; and its backward into g_h.
std::vector<torch::Tensor> gate_train_forward_cpu(const torch::Tensor& h, const std::string& isa);
void gate_train_backward_cpu(const torch::Tensor& g_z, const torch::Tensor& t, const torch::Tensor& s,
                             torch::Tensor& g_h, const std::string& isa);

// Fused WaveNet sampler (wavenet_cpu.cpp); speechmax/ops/wavenet.py packs the weights and documents shapes.
void wavenet_sample_cpu(const WavenetParams& p, const torch::Tensor& weights, const torch::Tensor& biases,
                        const torch::Tensor& desc, const torch::Tensor& embed, const torch::Tensor& decode,
                        const torch::Tensor& feats, const torch::Tensor& uniforms,
                        const c10::optional<torch::Tensor>& teacher, torch::Tensor& rings, torch::Tensor& prev,
                        torch::Tensor& classes, const c10::optional<torch::Tensor>& wave,
                        const c10::optional<torch::Tensor>& logits, int64_t threads, const std::string& isa);
std::vector<std::string> wavenet_cpu_isas();
// Fused activation-maximization step (maximize_cpu.cpp); speechmax/ops/maximize.py packs the weights and
// documents shapes.
void maximize_step_cpu(const MaximizeParams& p, const torch::Tensor& weights, const torch::Tensor& desc,
                       const torch::Tensor& norm, torch::Tensor& x, const torch::Tensor& targets,
                       torch::Tensor& obj_out, const c10::optional<torch::Tensor>& grad_out,
                       const c10::optional<torch::Tensor>& adam_m, const c10::optional<torch::Tensor>& adam_v,
                       int64_t threads, const std::string& isa, const c10::optional<torch::Tensor>& wino_weights,
                       const c10::optional<torch::Tensor>& wino_desc, const c10::optional<torch::Tensor>& wino_tf,
                       const c10::optional<torch::Tensor>& bf16_weights,
                       const c10::optional<torch::Tensor>& bf16_offsets);
std::vector<std::string> maximize_cpu_isas();
// The paper prior's 2-D decoder after its linear layer (decoder2d.cpp); speechmax/ops/decoder2d.py packs the
// weights and documents shapes.
void decoder2d_forward_cpu(const Decoder2dParams& p, const torch::Tensor& weights, const torch::Tensor& desc,
                           const torch::Tensor& affine, const torch::Tensor& h0, torch::Tensor& feats,
                           const c10::optional<torch::Tensor>& acts, int64_t threads, const std::string& isa);
void decoder2d_backward_cpu(const Decoder2dParams& p, const torch::Tensor& weights, const torch::Tensor& desc,
                            const torch::Tensor& affine, const torch::Tensor& h0, const torch::Tensor& acts,
                            const torch::Tensor& gf, torch::Tensor& g_h0, int64_t threads, const std::string& isa);
// The machine's FMA peak (peak.cpp): the chains' accumulators after `iterations` steps, (threads, chains, lanes);
// the GFLOP/s of `threads` threads (NaN when `isa` is auto and the CPU has nothing of that kind); the isas per kind.
torch::Tensor peak_chains(const std::string& kind, int64_t iterations, int64_t threads, const std::string& isa);
double peak_gflops(const std::string& kind, int64_t threads, double seconds, const std::string& isa);
std::vector<std::string> peak_isas(const std::string& kind);
}  // namespace speechmax
