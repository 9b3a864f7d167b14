"""Where a debugbench run's defect models lean, and where their ascents went: the gap between the two.

    python benchmarks/debugbench_directions.py RUN_DIR [--out FILE.json]

For each planted defect with a direction in the log-mel features (tone, noise, early, lowpass; the swap is a
content cue with none), on its word's clip starts (``RUN_DIR/starts-clips20.npz``), for the defect model, the
control and the reseeded control:

- ``derivative``: the gradient of log p(word) at each start along the defect's unit direction u (mean over the
  starts): how much the model gains from moving toward the cue -- tone: up in the mel bands holding the tone;
  noise: up on the start's quietest 20% of frames; early: up in the first ``within_s`` of the clip and down after;
  lowpass: down in the bands above the cutoff;
- ``cosine``: that derivative over the gradient's norm (mean over the starts): the share of the steepest ascent
  that points toward the cue;
- ``ascent_along`` / ``ascent_norm``: how far the run's ascent (``maximized-features-clips20.npz``) moved each
  start along u and in all (L2, natural-log units; mean over the starts).

This reads the plant (it is a diagnosis of the benchmark, not a detector). Prints a table; ``--out`` writes JSON.
"""
import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

from speechmax.evaluate.anomaly import band_edges_hz, quiet_frames
from speechmax.features import FeatureConfig
from speechmax.machine import cpu_model
from speechmax.models.classifier import load_classifier
from speechmax.outputs import write_json

MODELS = ("{defect}", "control", "control-reseeded")
SAMPLES = "maximized-features-clips20.npz"


def direction(defect: str, settings: dict, x0: np.ndarray, cfg: FeatureConfig) -> np.ndarray | None:
    """(N, n_mels, frames) unit directions toward ``defect``'s cue from each start, or None (no such direction)."""
    n, bands, frames = x0.shape
    lo_hi = band_edges_hz(cfg)
    u = np.zeros(x0.shape)
    if defect == "tone":
        u[:, (lo_hi[:, 0] <= settings["hz"]) & (lo_hi[:, 1] >= settings["hz"])] = 1.0
    elif defect == "noise":
        q = quiet_frames(x0, cfg)
        for i in range(n):
            u[i, :, q[i]] = 1.0
    elif defect == "early":
        early = np.arange(frames) * cfg.hop_length / cfg.sample_rate < settings["within_s"]
        u[:, :, early], u[:, :, ~early] = 1.0, -1.0
    elif defect == "lowpass":
        u[:, lo_hi[:, 0] >= settings["cutoff_hz"]] = -1.0
    else:
        return None
    return u / np.linalg.norm(u.reshape(n, -1), axis=1)[:, None, None]


def measure(run: Path) -> dict:
    cfg = FeatureConfig()
    with np.load(run / "starts-clips20.npz") as z:
        starts = {k: z[k] for k in z.files}
    rows = []
    for record in sorted((run / "corpora").glob("*/defect.json")):
        plant = json.loads(record.read_text())
        defect, word = plant["defect"], plant["class"]
        for name in (m.format(defect=defect) for m in MODELS):
            clf = load_classifier(run / "models" / name / "model").eval()
            labels = list(clf.cfg.labels)
            c = labels.index(word)
            pick = np.flatnonzero(starts["y"] == c)
            x0 = starts["x"][pick]
            u = direction(defect, plant["settings"], x0, cfg)
            if u is None:
                break
            v = torch.from_numpy(x0).requires_grad_(True)
            torch.log_softmax(clf(v), -1)[:, c].sum().backward()
            g = v.grad.numpy().astype(np.float64)
            along = (g * u).sum((1, 2))
            with np.load(run / "models" / name / SAMPLES) as z:
                keep = z["targets"] == c
                moved = z["features"][keep].astype(np.float64) - starts["x"][z["row"][keep]]
                assert (z["row"][keep] == pick).all()
            rows.append({"defect": defect, "word": word, "model": name, "starts": len(pick),
                         "derivative": round(float(along.mean()), 4),
                         "cosine": round(float((along / np.linalg.norm(g.reshape(len(g), -1), axis=1)).mean()), 4),
                         "gradient_norm": round(float(np.linalg.norm(g.reshape(len(g), -1), axis=1).mean()), 4),
                         "ascent_along": round(float((moved * u).sum((1, 2)).mean()), 3),
                         "ascent_norm": round(float(np.linalg.norm(moved.reshape(len(moved), -1), axis=1).mean()), 3)})
    return {"run": str(run), "rows": rows, "cpu": cpu_model(), "python": platform.python_version()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a speechmax debugbench folder (its clip starts, models and samples)")
    ap.add_argument("--out", type=Path, help="write the result here as JSON (refused if it exists)")
    a = ap.parse_args()
    if a.out is not None and a.out.exists():
        ap.error(f"{a.out} exists; give another --out")
    torch.set_num_threads(2)
    result = measure(a.run)
    print(f"{'defect':8s} {'word':5s} {'model':17s} {'d logp/du':>10s} {'cosine':>8s} {'|grad|':>8s} "
          f"{'ascent.u':>9s} {'|ascent|':>9s}")
    for r in result["rows"]:
        print(f"{r['defect']:8s} {r['word']:5s} {r['model']:17s} {r['derivative']:10.4f} {r['cosine']:8.4f} "
              f"{r['gradient_norm']:8.4f} {r['ascent_along']:9.3f} {r['ascent_norm']:9.3f}")
    if a.out is not None:
        write_json(a.out, result)


if __name__ == "__main__":
    main()
