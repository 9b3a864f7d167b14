// speechmax._C: the ops (ops.h), their params structs and the layout constants (kernel_params.h), bound once.
// CUDA ops are registered from cuda/bindings_cuda.cpp where torch has CUDA.
#include <torch/extension.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu_features.h"
#include "maximize_math.h"
#include "ops.h"
#include "wavenet_step.h"

#ifdef SPEECHMAX_WITH_CUDA
void register_cuda_ops(pybind11::module& m);  // cuda/bindings_cuda.cpp
#endif

namespace {

using namespace speechmax;

// A fixed-capacity array field as a Python list: reads give every entry (unused ones are 0), writes take up
// to the capacity and zero the rest.
template <class S, size_t N>
void def_array(py::class_<S>& cls, const char* name, int32_t (S::*field)[N]) {
  cls.def_property(
      name, [field](const S& s) { return std::vector<int32_t>(s.*field, s.*field + N); },
      [field, name](S& s, const std::vector<int32_t>& v) {
        TORCH_CHECK(v.size() <= N, name, " holds at most ", N, " entries, got ", v.size());
        std::fill(s.*field, s.*field + N, 0);
        std::copy(v.begin(), v.end(), s.*field);
      });
}

// Every struct is default-constructible field by field from Python (speechmax/ops/kernel_params.py fills one
// from its dataclass mirror), and gives its bytes: what a C caller of the standalone CUDA sources receives
// (the tests pass them to csrc/cuda/maximize.cu built for the host).
template <class S>
py::class_<S> bind_params(py::module& m, const char* name, const char* doc) {
  py::class_<S> cls(m, name, doc);
  cls.def(py::init<>()).def("__bytes__", [](const S& s) {
    return py::bytes(reinterpret_cast<const char*>(&s), sizeof(S));
  });
  return cls;
}

py::dict constants() {
  py::dict c;
  c["channel_align"] = kChannelAlign;
  c["conv_panel"] = kConvPanel;
  c["wavenet_panel"] = kWavenetPanel;
  c["bf16_k"] = kBf16K;
  c["bf16_n"] = kBf16N;
  c["desc_cols"] = kDescCols;
  c["max_conv_pad"] = kMaxConvPad;
  c["max_blocks"] = kMaxBlocks;
  c["max_wavenet_layers"] = kMaxWavenetLayers;
  c["max_decoder2d_layers"] = kMaxDecoder2dLayers;
  c["rms_eps"] = mx::kRmsEps;
  c["res_scale"] = wn::kResScale;
  return c;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "speechmax C++ kernels (CPU; CUDA where torch has it)";
  m.def("constants", &constants, "the constants of the packed layouts and the kernels' math (csrc/kernel_params.h)");

  auto mp = bind_params<MaximizeParams>(m, "MaximizeParams", "maximize_step's parameters (csrc/kernel_params.h)");
  mp.def_readwrite("latent", &MaximizeParams::latent)
      .def_readwrite("latent_dim", &MaximizeParams::latent_dim)
      .def_readwrite("channels", &MaximizeParams::channels)
      .def_readwrite("channels2", &MaximizeParams::channels2)
      .def_readwrite("base_frames", &MaximizeParams::base_frames)
      .def_readwrite("n_mels", &MaximizeParams::n_mels)
      .def_readwrite("n_frames", &MaximizeParams::n_frames)
      .def_readwrite("n_blocks", &MaximizeParams::n_blocks)
      .def_readwrite("n_classes", &MaximizeParams::n_classes)
      .def_readwrite("objective", &MaximizeParams::objective)
      .def_readwrite("level", &MaximizeParams::level)
      .def_readwrite("unit", &MaximizeParams::unit)
      .def_readwrite("optimizer", &MaximizeParams::optimizer)
      .def_readwrite("lr", &MaximizeParams::lr)
      .def_readwrite("l2", &MaximizeParams::l2)
      .def_readwrite("adam_step", &MaximizeParams::adam_step)
      .def_readwrite("beta1", &MaximizeParams::beta1)
      .def_readwrite("beta2", &MaximizeParams::beta2)
      .def_readwrite("eps", &MaximizeParams::eps)
      .def_readwrite("update", &MaximizeParams::update);
  def_array(mp, "block_channels", &MaximizeParams::block_channels);
  def_array(mp, "block_proj", &MaximizeParams::block_proj);

  auto wp = bind_params<WavenetParams>(m, "WavenetParams", "wavenet_sample's parameters (csrc/kernel_params.h)");
  wp.def_readwrite("residual_channels", &WavenetParams::residual_channels)
      .def_readwrite("gate_channels", &WavenetParams::gate_channels)
      .def_readwrite("skip_channels", &WavenetParams::skip_channels)
      .def_readwrite("out_channels", &WavenetParams::out_channels)
      .def_readwrite("n_classes", &WavenetParams::n_classes)
      .def_readwrite("cond_channels", &WavenetParams::cond_channels)
      .def_readwrite("hop_length", &WavenetParams::hop_length)
      .def_readwrite("n_layers", &WavenetParams::n_layers)
      .def_readwrite("step", &WavenetParams::step)
      .def_readwrite("t0", &WavenetParams::t0)
      .def_readwrite("temperature", &WavenetParams::temperature);
  def_array(wp, "dilations", &WavenetParams::dilations);

  auto dp = bind_params<Decoder2dParams>(m, "Decoder2dParams", "decoder2d's parameters (csrc/kernel_params.h)");
  dp.def_readwrite("height", &Decoder2dParams::height)
      .def_readwrite("width", &Decoder2dParams::width)
      .def_readwrite("n_layers", &Decoder2dParams::n_layers)
      .def_readwrite("n_mels", &Decoder2dParams::n_mels)
      .def_readwrite("n_frames", &Decoder2dParams::n_frames);
  def_array(dp, "channels", &Decoder2dParams::channels);

  m.def("gated_activation", &gated_activation_cpu, "tanh(a) * sigmoid(b) (CPU)");
  m.def("gate_train_forward", &gate_train_forward_cpu,
        "WaveNet gate for training: h (N, G) = [a | b] -> [z, tanh(a), sigmoid(b)] (CPU, one pass)",
        py::arg("h"), py::arg("isa") = "auto");
  m.def("gate_train_backward", &gate_train_backward_cpu,
        "Backward of gate_train_forward: g_z, tanh, sigmoid -> g_h (N, G), written in place (CPU, one pass)",
        py::arg("g_z"), py::arg("t"), py::arg("s"), py::arg("g_h"), py::arg("isa") = "auto");
  m.def("cpu_features", &cpu_features, "ISA extensions this CPU offers, as seen at run time");
  m.def("wavenet_sample", &wavenet_sample_cpu,
        "Fused WaveNet sampler (CPU, OpenMP over the batch, GIL released); updates rings/prev in place",
        py::arg("params"), py::kw_only(), py::arg("weights"), py::arg("biases"), py::arg("desc"), py::arg("embed"),
        py::arg("decode"), py::arg("feats"), py::arg("uniforms"), py::arg("teacher") = py::none(), py::arg("rings"),
        py::arg("prev"), py::arg("classes"), py::arg("wave") = py::none(), py::arg("logits") = py::none(),
        py::arg("threads") = 1, py::arg("isa") = "auto");
  m.def("wavenet_cpu_isas", &wavenet_cpu_isas, "instruction sets the fused CPU sampler can use here");
  m.def("maximize_step", &maximize_step_cpu,
        "Fused activation-maximization step (CPU, OpenMP over samples, GIL released); updates x in place",
        py::arg("params"), py::kw_only(), py::arg("weights"), py::arg("desc"), py::arg("norm"), py::arg("x"),
        py::arg("targets"), py::arg("objective_out"), py::arg("grad_out") = py::none(),
        py::arg("adam_m") = py::none(), py::arg("adam_v") = py::none(), py::arg("threads") = 1, py::arg("isa") = "auto",
        py::arg("wino_weights") = py::none(), py::arg("wino_desc") = py::none(), py::arg("wino_tf") = py::none(),
        py::arg("bf16_weights") = py::none(), py::arg("bf16_offsets") = py::none());
  m.def("maximize_cpu_isas", &maximize_cpu_isas, "instruction sets the fused maximization step can use here");
  m.def("decoder2d_forward", &decoder2d_forward_cpu,
        "The paper prior's 2-D decoder after its linear layer, forward (CPU, OpenMP over samples, GIL released)",
        py::arg("params"), py::kw_only(), py::arg("weights"), py::arg("desc"), py::arg("affine"), py::arg("h0"),
        py::arg("feats"), py::arg("acts") = py::none(), py::arg("threads") = 1, py::arg("isa") = "auto");
  m.def("decoder2d_backward", &decoder2d_backward_cpu,
        "Vector-Jacobian product of decoder2d_forward: gradient at feats -> gradient at h0 (ReLU mask applied)",
        py::arg("params"), py::kw_only(), py::arg("weights"), py::arg("desc"), py::arg("affine"), py::arg("h0"),
        py::arg("acts"), py::arg("gf"), py::arg("g_h0"), py::arg("threads") = 1, py::arg("isa") = "auto");
  m.def("peak_chains", &peak_chains,
        "The FMA peak's chains (kind fp32|bf16|amx_bf16) after `iterations` steps on each of `threads` threads: their "
        "accumulators, (threads, chains, lanes) float32",
        py::arg("kind"), py::arg("iterations"), py::kw_only(), py::arg("threads") = 1, py::arg("isa") = "auto");
  m.def("peak_gflops", &peak_gflops,
        "GFLOP/s of independent FMA chains in registers (kind fp32|bf16) on `threads` threads over about "
        "`seconds`; NaN where the CPU has no instruction set for the kind",
        py::arg("kind"), py::kw_only(), py::arg("threads") = 1, py::arg("seconds") = 0.3, py::arg("isa") = "auto");
  m.def("peak_isas", &peak_isas, "instruction sets the peak's chains of `kind` (fp32|bf16|amx_bf16) can use here, widest first");
#ifdef SPEECHMAX_WITH_CUDA
  m.attr("with_cuda") = true;
  register_cuda_ops(m);
#else
  m.attr("with_cuda") = false;
#endif
}
