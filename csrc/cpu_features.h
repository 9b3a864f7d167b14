// Run-time ISA detection: the build is portable (-mavx2 -mfma); wider paths are chosen when the CPU has them.
#pragma once
#include <map>
#include <string>

namespace speechmax {

inline std::map<std::string, bool> cpu_features() {
  __builtin_cpu_init();
  return {
      {"avx2", (bool)__builtin_cpu_supports("avx2")},
      {"fma", (bool)__builtin_cpu_supports("fma")},
      {"avx512f", (bool)__builtin_cpu_supports("avx512f")},
      {"avx512bw", (bool)__builtin_cpu_supports("avx512bw")},
      {"avx512bf16", (bool)__builtin_cpu_supports("avx512bf16")},
      {"amx_bf16", (bool)__builtin_cpu_supports("amx-bf16")},
  };
}

}  // namespace speechmax
