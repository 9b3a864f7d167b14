"""Issue 24's quality check of the bf16 ascent on the shipped models: does climbing in bf16 find what fp32 finds?

    python benchmarks/bf16_quality.py OUT.json [STARTS] [THREADS]     # STARTS per class, default 20

For each mode (latent through the shipped VAE prior, and features) the shipped classifier is climbed toward all
35 words from the same STARTS noise starts with the speechmax recipe, once with the fused kernel in fp32 and once
in bf16 precision, and scored by it and by the separate classifier: the goal is hit rates within 1 point. Then,
along the fp32 run's own trajectory of the first 2 starts per class, each step's gradient is taken in both
precisions at the same point: the goal is a cosine of at least 0.99 (reported: min, 1st percentile, median).
For scale, the same cosine between fp32 gradients at the point and at the point moved by at most one bf16
rounding of each element. Needs a CPU with bf16 dot products (AMX-BF16 or AVX512-BF16)."""
import json
import sys
import time

import torch

from speechmax.machine import cpu_model
from speechmax.maximize import bf16_isa, maximize
from speechmax.maximize.recipes import PAPER, RECIPES
from speechmax.models.registry import load_model
from speechmax.ops.backends import extension
from speechmax.ops.maximize import ascent_step

GOALS = {"hit_rate_points": 1.0, "grad_cosine": 0.99}


def gradient_cosines(clf, prior, mode, starts: int, steps: int, threads: int, baseline: bool = False) -> torch.Tensor:
    """Per start and step, the cosine between the bf16 and the fp32 gradient at the fp32 trajectory's point --
    or, with ``baseline``, between fp32 gradients at that point and at the point moved by at most one bf16
    rounding (x (1 + 2^-9 u), u uniform in [-1, 1]): how much a bf16-sized change of the input alone turns
    the gradient."""
    g = torch.Generator().manual_seed(0)
    shape = (prior.cfg.latent,) if prior is not None else (clf.cfg.n_mels, clf.cfg.n_frames)
    n = starts * clf.cfg.n_classes
    x = PAPER["init_std"] * torch.randn((n, *shape), generator=g)
    targets = torch.arange(clf.cfg.n_classes).repeat_interleave(starts)
    lr = PAPER["lr"][mode]
    cos = []
    for _ in range(steps):
        if baseline:
            xp = x * (1 + 2 ** -9 * (2 * torch.rand(x.shape, generator=g) - 1))
            _, g16 = ascent_step(clf, prior, xp, targets, lr=lr, update=False, return_grad=True, threads=threads)
        else:
            _, g16 = ascent_step(clf, prior, x.clone(), targets, lr=lr, update=False, return_grad=True,
                                 threads=threads, precision="bf16")
        _, g32 = ascent_step(clf, prior, x, targets, lr=lr, return_grad=True, threads=threads)  # steps x in fp32
        cos.append(torch.nn.functional.cosine_similarity(g16.flatten(1).double(), g32.flatten(1).double(), dim=1))
    return torch.stack(cos, 1)


def main(out: str, starts: int = 20, threads: int = 2) -> dict:
    if bf16_isa() is None:
        sys.exit("this CPU has no bf16 dot products (AMX-BF16 or AVX512-BF16): nothing to check")
    torch.set_num_threads(threads)
    clf, sep, prior = load_model("classifier"), load_model("classifier-separate"), load_model("prior")
    recipe = RECIPES["speechmax"]
    report = {"cpu": cpu_model(), "cpu_features": extension().cpu_features(), "bf16_isa": bf16_isa(),
              "threads": threads, "starts_per_class": starts, "recipe": recipe.name, "steps": recipe.steps,
              "goals": GOALS, "modes": {}}
    for mode in ("latent", "features"):
        pr = prior if mode == "latent" else None
        row = {}
        for precision in ("fp32", "bf16"):
            t = time.time()
            res = maximize(clf, "all", mode=mode, prior=pr, n=starts, recipe=recipe.name, seed=0, separate=sep,
                           threads=threads, keep_features=False, score_before=False, precision=precision)
            row[precision] = {"hit_rate": {k: round(res.hit_rate(k), 4) for k in ("classifier", "separate")},
                              "seconds": round(time.time() - t, 1), "nan_stopped": len(res.nan_stopped)}
        diff = {k: round(100 * abs(row["bf16"]["hit_rate"][k] - row["fp32"]["hit_rate"][k]), 2)
                for k in ("classifier", "separate")}
        row["hit_rate_difference_points"] = diff
        for key, base in (("grad_cosine", False), ("grad_cosine_fp32_input_moved_one_bf16_rounding", True)):
            c = gradient_cosines(clf, pr, mode, 2, recipe.steps, threads, baseline=base).flatten()
            row[key] = {"min": round(float(c.min()), 5), "p01": round(float(c.quantile(0.01)), 5),
                        "median": round(float(c.median()), 5), "n": c.numel()}
        cos = torch.tensor(row["grad_cosine"]["min"])
        row["met"] = max(diff.values()) <= GOALS["hit_rate_points"] and float(cos.min()) >= GOALS["grad_cosine"]
        report["modes"][mode] = row
        print(mode, json.dumps(row), flush=True)
    report["met"] = all(r["met"] for r in report["modes"].values())
    with open(out, "w") as f:
        f.write(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    if len(sys.argv) < 2 or len(sys.argv) > 4:
        sys.exit(__doc__)
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
