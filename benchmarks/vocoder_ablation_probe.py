"""Score vocoder training runs on the same probe clips: raw (non-EMA) or EMA weights of each run's
``last`` checkpoint, separate-classifier accuracy, STOI, voiced HNR and mel-cepstral distortion.

    python benchmarks/vocoder_ablation_probe.py CORPUS [--ema] [--per-class N] RUN_DIR [RUN_DIR ...]

Short ablations (a few hundred steps from one start) are compared on raw weights: an EMA of decay 0.9995
still mostly holds the start. Prints one JSON line per run."""
import argparse
import json
from pathlib import Path

from speechmax.features import FeatureConfig
from speechmax.models.registry import load_model
from speechmax.models.wavenet import WaveNet, WaveNetConfig
from speechmax.training import EMA, load_checkpoint
from speechmax.vocoder.quality import vocoder_quality


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--ema", action="store_true")
    ap.add_argument("--per-class", type=int, default=1)
    a = ap.parse_args()
    separate = load_model("classifier-separate", kind="classifier")
    for run in a.runs:
        conf = json.loads((Path(run) / "config.json").read_text())
        model = WaveNet(WaveNetConfig.from_dict(conf["model"]), FeatureConfig.from_dict(conf["features"]))
        ema = EMA(model)
        state = load_checkpoint(run, model, None, ema)
        m = (ema.model if a.ema else model).eval()
        q = vocoder_quality(m, a.corpus, separate, per_class=a.per_class)
        q.pop("examples", None)
        print(json.dumps({"run": run, "step": state["step"], "weights": "ema" if a.ema else "raw", **q}), flush=True)


if __name__ == "__main__":
    main()
