"""The paper's full objective experiment: N starts x 35 classes x 20 steps in latent mode (paper preset:
softmax probability, rms-normalised steps of 0.1, N(0, 0.1^2) starts), through the shipped VAE prior and
default classifier on the fused CPU kernels, scored by both classifiers.

    python benchmarks/paper_scale.py N THREADS OUT.json [fp32|bf16]   # the paper's experiment is N = 10000

The optional last argument is the fused kernel's precision (default fp32; bf16 where the CPU has bf16 dot
products, :func:`speechmax.maximize.bf16_isa`).

Prints (and writes) the measured wall time, start-steps per second, hit rates and peak memory, and a progress
line on stderr at every 5 % of the start-steps (elapsed, rate, time left), so a log of the run is readable. Run
it on an idle machine: it keeps both cores busy for over an hour at N = 10000."""
import json
import resource
import sys
import time

import torch

from speechmax.machine import cpu_model
from speechmax.maximize import bf16_isa, maximize
from speechmax.maximize.recipes import PAPER
from speechmax.ops.backends import extension
from speechmax.models.registry import load_model


def progress_lines(total: int, t0: float, every: float = 0.05):
    """A maximize() progress callable (given start-steps done so far) printing a line at every `every` of `total`."""
    state = {"done": 0, "next": every}

    def tick(k: int) -> None:
        state["done"] += k
        frac = state["done"] / total
        if frac + 1e-9 >= state["next"]:
            state["next"] = (int(frac / every) + 1) * every
            dt = time.time() - t0
            rate = state["done"] / max(dt, 1e-9)
            print(f"{100 * frac:5.1f} %  {state['done']:,} of {total:,} start-steps  {dt / 60:6.1f} min  "
                  f"{rate:,.0f}/s  {(total - state['done']) / max(rate, 1e-9) / 60:6.1f} min left",
                  file=sys.stderr, flush=True)
    return tick


def main(n: int, threads: int, out: str, precision: str = "fp32") -> dict:
    torch.set_num_threads(threads)
    clf, sep, prior = load_model("classifier"), load_model("classifier-separate"), load_model("prior")
    t0 = time.time()
    res = maximize(clf, "all", mode="latent", prior=prior, n=n, preset="paper", seed=0, separate=sep,
                   threads=threads, keep_features=False, precision=precision,
                   progress=progress_lines(n * clf.cfg.n_classes * PAPER["steps"], t0))
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
