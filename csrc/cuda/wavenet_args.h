// Arguments of the CUDA WaveNet sampler, shared by wavenet.cu (standalone, raw pointers) and its torch binding
// (bindings_cuda.cpp): the model's shape (kernel_params.h: WavenetShape, from the WavenetParams the caller
// passes), then one call's tensors. Shapes and layouts are those of the CPU sampler (csrc/wavenet_cpu.cpp): the
// same packed fp32 weights, descriptors and caller-owned state, all in device memory.
#pragma once
#include <stdint.h>

#include "../kernel_params.h"

struct SpeechmaxWavenetCudaArgs : speechmax::WavenetShape {
  const float* weights;    // packed panels (fp32)
  const float* biases;
  const int64_t* desc;     // (3 + 3L, kDescCols): element offset, M, Mp, K, Kp, bias offset
  const float* embed;      // (NC, R)
  const float* decode;     // (NC,) mu-law table
  // one call of T samples for B items
  int B;
  long T, F, step, t0;
  float temperature;
  const float* feats;      // (B, F, C)
  const float* uniforms;   // (B, T), row stride ld_u
  const int64_t* teacher;  // (B, T) or null
  float* rings;            // (B, ring_len, R)
  int64_t* prev;           // (B,)
  int64_t* classes;        // (B, T)
  float* wave;             // (B, T) or null
  float* logits;           // (B, T, NC) or null
  long ld_u, ld_teacher, ld_classes, ld_wave, ld_logits;
};
