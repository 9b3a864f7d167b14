#include <torch/extension.h>
#include "ops.h"
#include "cpu_features.h"

#ifdef SPEECHMAX_WITH_CUDA
void register_cuda_ops(pybind11::module& m);
void register_maximize_cuda(pybind11::module& m);  // cuda/maximize_binding.cpp
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "speechmax C++ kernels (CPU; CUDA where torch has it)";
  m.def("gated_activation", &speechmax::gated_activation_cpu, "tanh(a) * sigmoid(b) (CPU)");
  m.def("gate_train_forward", &speechmax::gate_train_forward_cpu,
        "WaveNet gate for training: h (N, G) = [a | b] -> [z, tanh(a), sigmoid(b)] (CPU, one pass)",
        py::arg("h"), py::arg("isa") = "auto");
  m.def("gate_train_backward", &speechmax::gate_train_backward_cpu,
        "Backward of gate_train_forward: g_z, tanh, sigmoid -> g_h (N, G), written in place (CPU, one pass)",
        py::arg("g_z"), py::arg("t"), py::arg("s"), py::arg("g_h"), py::arg("isa") = "auto");
  m.def("cpu_features", &speechmax::cpu_features, "ISA extensions this CPU offers, as seen at run time");
  m.def("wavenet_sample", &speechmax::wavenet_sample_cpu,
        "Fused WaveNet sampler (CPU, OpenMP over the batch, GIL released); updates rings/prev in place",
        py::arg("weights"), py::arg("biases"), py::arg("desc"), py::arg("embed"), py::arg("dims"),
        py::arg("dilations"), py::arg("feats"), py::arg("uniforms"), py::arg("teacher"), py::arg("rings"),
        py::arg("prev"), py::arg("step"), py::arg("t0"), py::arg("temperature"), py::arg("classes"),
        py::arg("wave"), py::arg("logits"), py::arg("decode"), py::arg("threads"), py::arg("isa"));
  m.def("wavenet_cpu_isas", &speechmax::wavenet_cpu_isas, "instruction sets the fused CPU sampler can use here");
  m.def("maximize_step", &speechmax::maximize_step_cpu,
        "Fused activation-maximization step (CPU, OpenMP over samples, GIL released); updates x in place",
        py::arg("weights"), py::arg("desc"), py::arg("dims"), py::arg("norm"), py::arg("x"), py::arg("targets"),
        py::arg("objective"), py::arg("level"), py::arg("unit"), py::arg("optimizer"), py::arg("lr"),
        py::arg("l2"), py::arg("adam_m"), py::arg("adam_v"), py::arg("adam_step"), py::arg("beta1"),
        py::arg("beta2"), py::arg("eps"), py::arg("objective_out"), py::arg("grad_out"), py::arg("update"),
        py::arg("threads"), py::arg("isa"), py::arg("wino_weights") = py::none(), py::arg("wino_desc") = py::none(),
        py::arg("wino_tf") = py::none());
  m.def("decoder2d_forward", &speechmax::decoder2d_forward_cpu,
        "The paper prior's 2-D decoder after its linear layer, forward (CPU, OpenMP over samples, GIL released)",
        py::arg("weights"), py::arg("desc"), py::arg("dims"), py::arg("affine"), py::arg("h0"), py::arg("feats"),
        py::arg("acts") = py::none(), py::arg("threads") = 1, py::arg("isa") = "auto");
  m.def("decoder2d_backward", &speechmax::decoder2d_backward_cpu,
        "Vector-Jacobian product of decoder2d_forward: gradient at feats -> gradient at h0 (ReLU mask applied)",
        py::arg("weights"), py::arg("desc"), py::arg("dims"), py::arg("affine"), py::arg("h0"), py::arg("acts"),
        py::arg("gf"), py::arg("g_h0"), py::arg("threads") = 1, py::arg("isa") = "auto");
  m.def("maximize_cpu_isas", &speechmax::maximize_cpu_isas, "instruction sets the fused maximization step can use here");
#ifdef SPEECHMAX_WITH_CUDA
  m.attr("with_cuda") = true;
  register_cuda_ops(m);
  register_maximize_cuda(m);
#else
  m.attr("with_cuda") = false;
#endif
}
