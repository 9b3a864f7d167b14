// What the AMX code of maximize_cpu.cpp (conv_amx.h) and peak.cpp share: the tile configuration's memory layout
// and the one-time request for the tiles' state that Linux (5.16+) needs before a process may use them.
#pragma once
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace speechmax {

// LDTILECFG's 64-byte operand, palette 1: bytes per row and rows of each of the 8 tiles.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Every tile 16 rows of 64 bytes: 16 x 16 fp32, or 16 x 32 bf16.
inline TileConfig full_tiles() {
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) cfg.rows[i] = 16, cfg.colsb[i] = 64;
  return cfg;
}

// The CPU has AMX-BF16 tiles and the kernel granted this process their state (asked once; true thereafter).
inline bool amx_ready() {
  static const bool ok = [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16")) return false;
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;  // arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
}

}  // namespace speechmax
