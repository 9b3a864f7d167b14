"""The paper's full objective experiment: N starts x 35 classes x 20 steps in latent mode (paper preset:
softmax probability, rms-normalised steps of 0.1, N(0, 0.1^2) starts), through the shipped VAE prior and
default classifier on the fused CPU kernels, scored by both classifiers.

    python benchmarks/paper_scale.py N THREADS OUT.json [fp32|bf16]   # the paper's experiment is N = 10000

The optional last argument is the fused kernel's precision (default fp32; bf16 where the CPU has bf16 dot
products, :func:`speechmax.maximize.bf16_isa`).

Prints (and writes) the measured wall time, start-steps per second, hit rates and peak memory. Run it on an
idle machine: it keeps both cores busy for over an hour at N = 10000."""
import json
import resource
import sys
import time

import torch

from speechmax.machine import cpu_model
from speechmax.maximize import bf16_isa, maximize
from speechmax.ops.backends import extension
from speechmax.models.registry import load_model


def main(n: int, threads: int, out: str, precision: str = "fp32") -> dict:
    torch.set_num_threads(threads)
    clf, sep, prior = load_model("classifier"), load_model("classifier-separate"), load_model("prior")
    t0 = time.time()
    res = maximize(clf, "all", mode="latent", prior=prior, n=n, preset="paper", seed=0, separate=sep,
                   threads=threads, keep_features=False, progress=True, precision=precision)
    dt = time.time() - t0
    starts, steps = len(res.targets), res.settings["steps"]
    both = ((res.probs_after.argmax(-1) == res.targets) & (res.separate_after.argmax(-1) == res.targets)).float().mean()
    r = {"n_per_class": n, "starts": starts, "steps": steps, "start_steps": starts * steps, "seconds": round(dt, 1),
         "start_steps_per_s": round(starts * steps / dt, 1), "threads": threads, "backend": res.settings["backend"],
         "precision": res.settings["precision"], "bf16_isa": bf16_isa() if precision == "bf16" else None,
         "decoder": res.settings["decoder"], "cpu": cpu_model(), "cpu_features": extension().cpu_features(),
         "hit_rate": {"classifier": res.hit_rate("classifier"), "separate": res.hit_rate("separate")},
         "both": round(float(both), 4), "nan_stopped": len(res.nan_stopped),
         "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    text = json.dumps(r, indent=1)
    print(text)
    with open(out, "w") as f:
        f.write(text)
    return r


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], *sys.argv[4:])
