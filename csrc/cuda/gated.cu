// CUDA gated activation. Standalone (raw pointers, no torch headers) so nvcc can compile it on machines
// whose torch has no CUDA; the element math is sm_math.h, the same header the CPU op is built from.
#include <cuda_runtime.h>
#include "../sm_math.h"

namespace speechmax {

__global__ void gated_activation_kernel(const float* __restrict__ a, const float* __restrict__ b,
                                        float* __restrict__ out, long n) {
  long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
  for (; i < n; i += (long)gridDim.x * blockDim.x) out[i] = gate(a[i], b[i]);
}

}  // namespace speechmax

extern "C" cudaError_t speechmax_gated_activation_cuda(const float* a, const float* b, float* out, long n,
                                                       cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int threads = 256;
  long blocks = (n + threads - 1) / threads;
  if (blocks > 65535) blocks = 65535;
  speechmax::gated_activation_kernel<<<(unsigned)blocks, threads, 0, stream>>>(a, b, out, n);
  return cudaGetLastError();
}
