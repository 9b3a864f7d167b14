// The parameters of every kernel entry point, and the constants of the packed weight layouts, defined once.
// The CPU ops (csrc/*.cpp), the CUDA kernels (csrc/cuda/*.cu, which nvcc builds standalone: hence plain C++
// here, no torch headers) and the Python side read them from this header: bindings.cpp binds each struct as
// speechmax._C.<Name> and reports the constants as speechmax._C.constants(); speechmax/ops/kernel_params.py
// mirrors the structs as dataclasses, and tests/test_kernel_params.py checks that the two sides agree.
//
// A struct holds everything a call passes that is not a tensor: the shapes of the packed model (filled when
// the weights are packed) and the call's own scalars. Arrays have a fixed capacity so the structs stay plain
// data that a CUDA kernel can take by value and a ctypes caller can pass as bytes; unused entries are 0.
#pragma once
#include <stdint.h>

#include "sm_math.h"

namespace speechmax {

// --- constants of the packed layouts ------------------------------------------------------------------------

// Packed matrices pad their outputs, and activations their rows, to a multiple of this many floats (one
// AVX-512 vector, two AVX2 ones).
constexpr int kChannelAlign = 16;
// Outputs per weight panel of the convolution kernels (maximize_step, decoder2d) and of the WaveNet sampler.
constexpr int kConvPanel = 32;
constexpr int kWavenetPanel = 64;
// maximize_step's bf16 weights (conv_bf16_isa.h, conv_amx.h) pad their inputs to whole AMX tiles of 32 bf16
// (64 bytes) and their outputs to two 16-column tiles.
constexpr int kBf16K = 32;
constexpr int kBf16N = 32;
// Columns of a `desc` row: maximize_step / decoder2d: weight offset, bias offset (-1: none), cin, coutp, taps,
// pad; wavenet_sample: element offset, M, Mp, K, Kp, bias offset.
constexpr int kDescCols = 6;
// Largest convolution padding the maximize kernels cover (odd kernels up to 9 taps). The CUDA kernel keeps this
// many zero rows around every activation, enough for a direct convolution.
constexpr int kMaxConvPad = 4;
// The CPU kernel keeps more zero rows: Winograd F(3, 3) pads the taps to a multiple of 3 and works in tiles of
// 3 outputs, so it reads up to 7 rows past the last one (7 taps; 6 for 9, 5 for 5, 3 for 3). Rounded to 8.
constexpr int kCpuPadRows = 8;
// Capacities of the structs' arrays. kMaxBlocks also bounds the CUDA maximize kernel, which takes every
// block's matrices by value in its 4 KB of kernel parameters.
constexpr int kMaxBlocks = 8;
constexpr int kMaxWavenetLayers = 128;
constexpr int kMaxDecoder2dLayers = 8;

SM_HD constexpr int round_up(int n, int m) { return (n + m - 1) / m * m; }
SM_HD constexpr int align_channels(int n) { return (n + kChannelAlign - 1) / kChannelAlign * kChannelAlign; }

// --- maximize_step (maximize_cpu.cpp, cuda/maximize.cu) ------------------------------------------------------

// The packed decoder + classifier (speechmax/ops/maximize.py: pack_maximizer) and one ascent step on them.
struct MaximizeParams {
  // latent mode: x is a latent decoded by the vae's frame-wise conv decoder (fc -> conv1 -> conv2 -> conv3)
  bool latent = false;
  int32_t latent_dim = 0, channels = 0, channels2 = 0, base_frames = 0;  // latent, conv1 / conv2 outputs, T0
  // the tcres classifier
  int32_t n_mels = 0, n_frames = 0, n_blocks = 0, n_classes = 0;
  int32_t block_channels[kMaxBlocks + 1] = {};  // the stem's output channels, then each block's
  int32_t block_proj[kMaxBlocks] = {};          // 1: block i has a 1x1 projection on its shortcut
  // the step: objective kind (mx::Objective), level (0 stem, i block i, n_blocks + 1 pool, n_blocks + 2
  // logits) and unit; optimizer (mx::Optimizer) and its settings; adam_step counts this update (1-based)
  int32_t objective = 0, level = 0, unit = 0, optimizer = 0;
  double lr = 0.1, l2 = 0.0;
  int64_t adam_step = 0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  bool update = true;  // false: only the objective and the gradient
};

// Sizes derived from MaximizeParams (padded widths), shared by the CPU and CUDA kernels.
struct MaximizeShape {
  bool latent;
  int L, Lp, C, Cp, C2, C2p, T0, M, Mp, T, nb, NC, NCp, cmp;  // cmp: the widest classifier activation, padded
  int ch[kMaxBlocks + 1];
  int proj[kMaxBlocks];
};

// false when the params do not describe a network the kernels can hold.
inline bool maximize_shape(const MaximizeParams& p, MaximizeShape* out) {
  MaximizeShape& s = *out;
  if (p.n_blocks < 0 || p.n_blocks > kMaxBlocks || p.n_mels < 1 || p.n_frames < 1 || p.n_classes < 1) return false;
  s.latent = p.latent;
  s.L = p.latent_dim, s.C = p.channels, s.C2 = p.channels2, s.T0 = p.base_frames;
  s.M = p.n_mels, s.T = p.n_frames, s.nb = p.n_blocks, s.NC = p.n_classes;
  s.Lp = align_channels(s.L), s.Cp = align_channels(s.C), s.C2p = align_channels(s.C2);
  s.Mp = align_channels(s.M), s.NCp = align_channels(s.NC);
  s.cmp = 0;
  for (int i = 0; i <= kMaxBlocks; ++i) {
    s.ch[i] = i <= s.nb ? p.block_channels[i] : 0;
    s.cmp = align_channels(s.ch[i]) > s.cmp ? align_channels(s.ch[i]) : s.cmp;
  }
  for (int i = 0; i < kMaxBlocks; ++i) s.proj[i] = i < s.nb ? p.block_proj[i] : 0;
  return true;
}

// --- wavenet_sample (wavenet_cpu.cpp, cuda/wavenet.cu) ------------------------------------------------------

// The packed WaveNet (speechmax/ops/wavenet.py: pack_wavenet; names as in WaveNetConfig) and one call of the
// sampler: sample i of the call is sample `step + i` of the caller's state and reads conditioning frame
// frame_of(t0 + i).
struct WavenetParams {
  int32_t residual_channels = 0, gate_channels = 0, skip_channels = 0, out_channels = 0, n_classes = 0;
  int32_t cond_channels = 0, hop_length = 0, n_layers = 0;
  int32_t dilations[kMaxWavenetLayers] = {};
  int64_t step = 0, t0 = 0;
  double temperature = 1.0;
};

// Sizes derived from WavenetParams, shared by the CPU and CUDA samplers: padded widths, and where layer l's
// ring buffer starts in an item's rings (ring_len rows of R floats in all).
struct WavenetShape {
  int R, G, S, O, NC, C, hop, L, Rp, Ghp, Sp, Op, NCp, Cp;
  int dil[kMaxWavenetLayers];
  int ring_off[kMaxWavenetLayers];
  int ring_len;
};

inline bool wavenet_shape(const WavenetParams& p, WavenetShape* out) {
  WavenetShape& s = *out;
  if (p.n_layers < 1 || p.n_layers > kMaxWavenetLayers || p.gate_channels % 2 || p.hop_length < 1) return false;
  s.R = p.residual_channels, s.G = p.gate_channels, s.S = p.skip_channels, s.O = p.out_channels;
  s.NC = p.n_classes, s.C = p.cond_channels, s.hop = p.hop_length, s.L = p.n_layers;
  s.Rp = align_channels(s.R), s.Ghp = align_channels(s.G / 2), s.Sp = align_channels(s.S);
  s.Op = align_channels(s.O), s.NCp = align_channels(s.NC), s.Cp = align_channels(s.C);
  s.ring_len = 0;
  for (int l = 0; l < kMaxWavenetLayers; ++l) {
    s.dil[l] = l < s.L ? p.dilations[l] : 0;
    if (l < s.L && s.dil[l] < 1) return false;
    s.ring_off[l] = s.ring_len;
    s.ring_len += s.dil[l];
  }
  return true;
}

// --- decoder2d_forward / decoder2d_backward (decoder2d.cpp) -------------------------------------------------

// The paper prior's 2-D decoder after its linear layer (speechmax/ops/decoder2d.py: pack_decoder2d): an image
// of height x width pixels and channels[0] channels, n_layers transposed convolutions (4, 2, 1) with channels
// [1..n_layers] outputs (the last is 1), cropped to n_mels x n_frames.
struct Decoder2dParams {
  int32_t height = 0, width = 0, n_layers = 0, n_mels = 0, n_frames = 0;
  int32_t channels[kMaxDecoder2dLayers + 1] = {};
};

}  // namespace speechmax
