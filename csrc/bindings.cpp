#include <torch/extension.h>
#include "ops.h"
#include "cpu_features.h"

#ifdef SPEECHMAX_WITH_CUDA
void register_cuda_ops(pybind11::module& m);
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "speechmax C++ kernels (CPU; CUDA where torch has it)";
  m.def("gated_activation", &speechmax::gated_activation_cpu, "tanh(a) * sigmoid(b) (CPU)");
  m.def("cpu_features", &speechmax::cpu_features, "ISA extensions this CPU offers, as seen at run time");
#ifdef SPEECHMAX_WITH_CUDA
  m.attr("with_cuda") = true;
  register_cuda_ops(m);
#else
  m.attr("with_cuda") = false;
#endif
}
