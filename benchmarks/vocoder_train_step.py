"""One vocoder training step (forward, loss, backward, Adam) at the shipped configuration and the trainer's
batch: the fused training stack (WaveNet.forward: time-major GEMMs, hand-written backward, C++ gate) against
its autograd twin (WaveNet.forward_ref: conv1d + autograd), and the fused stack under bf16 autocast (bf16 GEMM
operands, fp32 accumulation: the trainer's --bf16), measured in the same run on random data.

    python benchmarks/vocoder_train_step.py [THREADS] [STEPS] [OUT.json]

Run it on an idle machine (pause a training run first: kill -STOP / -CONT)."""
import json
import sys
import time

import torch
import torch.nn.functional as F

from speechmax.models.wavenet import WaveNet, frames_needed
from speechmax.vocoder.train import VocoderTrainConfig


def seconds_per_step(model, forward, batch, steps: int, bf16: bool = False) -> float:
    inputs, targets, mel, offset = batch
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = forward(inputs, mel, offset)
        loss = F.cross_entropy(logits.float(), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()                                    # warm-up (allocations, kernel dispatch)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main(threads: int = 2, steps: int = 5, out: str | None = None) -> dict:
    torch.set_num_threads(threads)
    tc = VocoderTrainConfig()
    torch.manual_seed(0)
    model = WaveNet()
    B, T = tc.batch, tc.window
    batch = (torch.randint(0, 256, (B, T)), torch.randint(0, 256, (B, T)),
             torch.randn(B, model.cfg.n_mels, frames_needed(T, model.cfg.hop_length) + 4) - 7,
             torch.randint(0, 4, (B,)))
    fused = seconds_per_step(model, model.forward, batch, steps)
    bf16 = seconds_per_step(model, model.forward, batch, steps, bf16=True)
    ref = seconds_per_step(model, model.forward_ref, batch, steps)
    from speechmax import _C

    r = {"batch": B, "window": T, "threads": threads, "steps": steps, "cpu": _C.cpu_features(),
         "fused_s_per_step": round(fused, 3), "fused_bf16_s_per_step": round(bf16, 3),
         "ref_s_per_step": round(ref, 3), "speedup": round(ref / fused, 2), "bf16_speedup": round(fused / bf16, 2),
         "fused_samples_per_s": round(B * T / fused)}
    print(json.dumps(r, indent=2))
    if out:
        with open(out, "w") as f:
            json.dump(r, f, indent=2)
    return r


if __name__ == "__main__":
    a = sys.argv[1:]
    main(int(a[0]) if a else 2, int(a[1]) if len(a) > 1 else 5, a[2] if len(a) > 2 else None)
