"""Rewrite the generated tables of RESULTS.md from the files that hold the measurements.

Sources: the shipped model cards (speechmax/assets/NAME.json, and the safetensors header beside each for its
parameter count and size) and the committed full evaluation (checkpoints/evaluate/metrics.json). Each table
sits in RESULTS.md between ``<!-- begin generated: NAME -->`` and ``<!-- end generated: NAME -->``; the prose
around them is hand-written (figures with no machine-readable source, each with its command and CPU) and is
kept as it is.

    python benchmarks/results_page.py           # rewrite RESULTS.md's generated tables
    python benchmarks/results_page.py --check   # exit 1 if RESULTS.md is not what the sources give

It reads JSON only -- no torch, no speechmax import -- so the test that runs ``--check`` takes well under a
second, and the page can be regenerated on any machine with a Python.
"""
from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import struct
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "RESULTS.md"
ASSETS = ROOT / "speechmax" / "assets"
EVALUATION = ROOT / "checkpoints" / "evaluate" / "metrics.json"

BLOCK = re.compile(r"<!-- begin generated: (?P<name>[\w-]+) -->\n.*?<!-- end generated: (?P=name) -->",
                   re.S)
CLASSIFIERS = ("classifier", "classifier-separate", "classifier-paper")
PRIORS = ("prior", "prior-paper")
# Words for the cards' architecture codes; the codes themselves are the configs' `arch` fields.
ARCHITECTURES = {
    ("classifier", "tcres"): "1-D residual conv net over frames (tcres)",
    ("classifier", "cnn2d"): "2-D CNN (cnn2d), another seed: for evaluation only",
    ("classifier", "paper"): "the seed paper's CNN, trained without augmentation as it was",
    ("prior", "vae"): "VAE, frame-wise 1-D conv decoder (the fused step runs it)",
    ("prior", "paper"): "the seed paper's deterministic conv autoencoder (2-D transposed-conv decoder)",
}
# What the page says of the training data; the cards must agree on these (the prior cards carry fewer fields).
DATA_FIELDS = ("root", "clips", "speakers", "seed", "engines", "splits")
# Batch-norm statistics are buffers, not parameters.
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _json(path: Path):
    return json.loads(path.read_text())


def _card(name: str) -> dict:
    return _json(ASSETS / f"{name}.json")


def _safetensors_header(name: str) -> dict:
    with open(ASSETS / f"{name}.safetensors", "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header


def parameter_count(name: str) -> int:
    """Elements of the shipped weights' tensors, batch-norm statistics left out."""
    return sum(math.prod(t["shape"]) for key, t in _safetensors_header(name).items() if not key.endswith(BUFFERS))


def _pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f} %"


def _ci(rate: dict) -> str:
    return f"{_pct(rate['rate'])} [{100 * rate['lo']:.1f}, {100 * rate['hi']:.1f}]"


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def models_block() -> list[str]:
    cards = {name: _card(name) for name in CLASSIFIERS + PRIORS}
    data = {json.dumps({k: c["training_data"][k] for k in DATA_FIELDS}, sort_keys=True) for c in cards.values()}
    if len(data) != 1:
        raise ValueError("the classifier and prior cards name different training data; give each its own line")
    d = cards["classifier"]["training_data"]
    s = d["splits"]
    lines = [f"Training data (every card's `training_data`): `{d['root']}`, {d['clips']:,} clips = "
             f"{len(cards['classifier']['config']['labels'])} words × {d['speakers']:,} pseudo-speakers (seed "
             f"{d['seed']}; {', '.join(d['engines'])}), split by speaker: {s['training']:,} training / "
             f"{s['validation']:,} validation / {s['testing']:,} test clips.", ""]
    rows = []
    for name in CLASSIFIERS:
        c = cards[name]
        m, t = c["metrics"], c["training"]
        worst = min(m["per_class_accuracy"].items(), key=lambda kv: (kv[1], kv[0]))
        rows.append([f"`{name}`", ARCHITECTURES.get(("classifier", c["config"]["arch"]), c["config"]["arch"]),
                     _millions(parameter_count(name)), f"**{_pct(m['test_accuracy'], 2)}**",
                     _pct(m["val_accuracy"], 2), f"{worst[0]} {_pct(worst[1])}",
                     f"{t['epochs']} epochs, {_minutes(t['seconds'])}, seed {t['seed']}"])
    test_clips = cards["classifier"]["metrics"]["test_clips"]
    lines += _table(["classifier", "architecture", "parameters", f"test accuracy ({test_clips:,} clips)",
                     "validation", "hardest word (test)", "training"], rows)
    lines.append("")
    rows = []
    for name in PRIORS:
        c = cards[name]
        m, t = c["metrics"], c["training"]
        covered = m.get("random_z_classes_covered")
        rows.append([f"`{name}`", ARCHITECTURES.get(("prior", c["config"]["arch"]), c["config"]["arch"]),
                     str(c["config"]["latent"]), _millions(parameter_count(name)),
                     f"**{_pct(m['classifier_accuracy_on_reconstructions'], 2)}**",
                     _pct(m["classifier_accuracy_on_originals"], 2), f"{m['test_recon_mse']:.4f}",
                     "(not variational)" if covered is None else f"{covered} of {len(_labels())} classes",
                     f"{t['epochs']} epochs, {_minutes(t['seconds'])}, seed {t['seed']}"])
    lines += _table(["prior", "architecture", "latent", "parameters", "default classifier on test reconstructions",
                     "on the originals", "test reconstruction MSE", "random z ~ N(0, I) lands in", "training"], rows)
    return lines


def vocoder_block() -> list[str]:
    c = _card("vocoder")
    cfg, m, t = c["config"], c["metrics"], c["training"]
    size = (ASSETS / "vocoder.safetensors").stat().st_size
    lines = [f"`vocoder`: WaveNet, residual {cfg['residual_channels']} / gate {cfg['gate_channels']} / skip "
             f"{cfg['skip_channels']}, {cfg['n_layers']} layers, μ-law {cfg['n_classes']}; "
             f"{_millions(parameter_count('vocoder'))} parameters, {size / 1e6:.1f} MB. EMA weights at step "
             f"{t['steps']:,} after {t['train_hours']} h of training on {' + '.join(f'`{p}`' for p in c['training_data'])}. "
             f"Measured on {m['clips']} test clips ({m['per_class']} per word), each vocoder's output re-featurised "
             f"from audio; STOI on the {m['stoi_clips']} clips long enough for it. Command (the card's "
             f"`metrics_command`): `{c['metrics_command']}`.", ""]

    def cell(metric: str, who: str, fmt: str) -> str:
        value = m[metric].get(who)
        return "—" if value is None or (metric == "mcd_db" and who == "original") else fmt.format(value)

    rows = [[label, cell("separate_accuracy", who, "{:.1%}").replace("%", " %"), cell("stoi", who, "{:.3f}"),
             cell("hnr_db", who, "{:.1f} dB"), cell("mcd_db", who, "{:.1f} dB")]
            for who, label in (("original", "original audio"), ("wavenet", "WaveNet (`vocoder`)"),
                               ("griffinlim", "Griffin-Lim (32 iterations)"))]
    return lines + _table(["audio", "separate classifier", "STOI", "voiced HNR", "MCD"], rows)


def vocoder_curve_block() -> list[str]:
    t = _card("vocoder")["training"]
    nll = {step: value for step, _, value in t["val_nll_curve"]}
    rows, old = [], False
    for q in t["quality_curve"]:
        unscored = q.get("stoi_clips") is None
        old |= unscored
        rows.append([f"{q['step']:,}", f"{q['train_hours']:.2f}", _pct(q["separate_accuracy"]["wavenet"]),
                     f"{q['stoi']['wavenet']:.3f}" + (" †" if unscored else ""),
                     f"{q['hnr_db']['wavenet']:.2f} dB" if "hnr_db" in q else "",
                     f"{q['mcd_db']['wavenet']:.1f} dB" if "mcd_db" in q else "",
                     f"{nll[q['step']]:.4f}" if q["step"] in nll else ""])
    last = t["quality_curve"][-1]
    lines = _table(["step", "training hours", "WaveNet: separate classifier", "STOI", "voiced HNR", "MCD",
                    "validation NLL"], rows)
    lines += ["", f"Probe: {last['clips']} test clips ({last['stoi_clips']} scorable by STOI); on them the original "
              f"scores {_pct(last['separate_accuracy']['original'])}, Griffin-Lim "
              f"{_pct(last['separate_accuracy']['griffinlim'])}, STOI {last['stoi']['griffinlim']:.3f}"
              + (f", HNR {last['hnr_db']['griffinlim']:.2f} dB (original {last['hnr_db']['original']:.2f} dB), "
                 f"MCD {last['mcd_db']['griffinlim']:.1f} dB" if "hnr_db" in last else "") + "."]
    if old:
        lines += ["", f"† {t['quality_curve_note']}."]
    return lines


def _evaluation() -> dict:
    return _json(EVALUATION)


def _labels() -> list[str]:
    return _card("classifier")["config"]["labels"]


def evaluation_block() -> list[str]:
    e = _evaluation()
    labels = _labels()
    runs = e["noise_to_class"]
    n = {r["overall"]["n"] for r in runs.values()}
    lines = [f"Data: {e['data']['source']}; on its clips the classifier scores {_pct(e['data']['classifier_accuracy'], 2)}, "
             f"the separate classifier {_pct(e['data']['separate_accuracy'], 2)}. "
             f"Noise starts: {e['settings']['per_class']:,} per target × {len(labels)} targets = "
             f"{', '.join(f'{x:,}' for x in sorted(n))} per run. Success = the classifier *and* the separate "
             f"classifier give the target, mean over targets, 95 % bootstrap CI.", ""]
    rows = []
    for run, r in runs.items():
        s = r["settings"]
        tops = [labels[max(range(len(row)), key=row.__getitem__)] for row in r["heatmap_separate"]]
        hits = sum(top == target for top, target in zip(tops, labels))
        word, count = Counter(top for top, target in zip(tops, labels) if top != target).most_common(1)[0] \
            if hits < len(labels) else ("", 0)
        mean_p = sum(row[labels.index(word)] for row in r["heatmap_separate"]) / len(labels) if count else 0.0
        by_cpu = r.get("seconds_by_cpu", {"not recorded": r["seconds"]})
        rows.append([f"{run}", f"{s['steps']} {s['optimizer']} steps, lr {s['lr']}"
                     + (f", decoder: {s['decoder']}" if s["decoder"] else ""),
                     f"**{_ci(r['overall'])}**", _pct(r["hit_rate"]["classifier"], 2),
                     f"{hits} of {len(labels)}",
                     f"{word} on {count} targets (mean p {mean_p:.2f})" if count > 1 else "—",
                     f"{r['seconds']:,.0f} s (" + ", ".join(f"{cpu}: {sec:,.0f} s" for cpu, sec in sorted(by_cpu.items()))
                     + ")"])
    lines += _table(["run (recipe / mode)", "ascent", "success", "classifier alone",
                     "top word = the target", "commonest other top word", "compute (by CPU)"], rows)
    lines += ["", "Top word: the word of highest mean softmax of the separate classifier over a target's samples (the "
              "heatmap's row maximum); mean p: that word's mean probability over every target's samples."]
    timing = e["timing"]
    lines += ["", f"Compute in all: {timing['total']:,.0f} s = {timing['total'] / 3600:.1f} h on "
              f"{e['settings']['threads']} threads (the last sitting, which resumed the noise runs from "
              f"`checkpoints/evaluate/partial/` and did the rest: {timing['this sitting']:,.0f} s)."]
    return lines


def evaluation_summary_block() -> list[str]:
    return [f"- {line}" for line in _evaluation()["summary"]]


def vocoder_control_block() -> list[str]:
    rows = []
    for group, g in _evaluation()["vocoder_control"]["groups"].items():
        rows.append([group, str(g["n"]), _ci(g["features"])]
                    + [f"{_ci(g[v])}; keeps the label {_pct(g[v]['agrees_with_features'])}"
                       for v in ("wavenet", "griffinlim")])
    return _table(["samples", "n", "separate classifier on the features", "after WaveNet", "after Griffin-Lim"], rows)


def evaluation_per_class_block() -> list[str]:
    runs = _evaluation()["noise_to_class"]
    rows = [[word] + [_pct(r["per_class"][word]["rate"]) for r in runs.values()] for word in _labels()]
    return ["<details><summary>Success per target word, each run</summary>", ""] + \
        _table(["target"] + list(runs), rows) + ["", "</details>"]


BLOCKS = {
    "models": models_block,
    "vocoder": vocoder_block,
    "vocoder-curve": vocoder_curve_block,
    "evaluation": evaluation_block,
    "evaluation-summary": evaluation_summary_block,
    "vocoder-control": vocoder_control_block,
    "evaluation-per-class": evaluation_per_class_block,
}


def render(text: str) -> str:
    """`text` (RESULTS.md) with every generated block rewritten from its sources; the prose is kept."""
    found = [m.group("name") for m in BLOCK.finditer(text)]
    unknown = sorted(set(found) - set(BLOCKS))
    missing = sorted(set(BLOCKS) - set(found))
    twice = sorted(name for name, k in Counter(found).items() if k > 1)
    if unknown or missing or twice:
        raise ValueError(f"RESULTS.md's generated blocks: unknown {unknown}, missing {missing}, repeated {twice}")
    return BLOCK.sub(lambda m: (f"<!-- begin generated: {m.group('name')} -->\n"
                                + "\n".join(BLOCKS[m.group("name")]()) + f"\n<!-- end generated: {m.group('name')} -->"),
                     text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check: exit 1 if RESULTS.md is out of date")
    args = parser.parse_args(argv)
    text = RESULTS.read_text()
    new = render(text)
    if args.check:
        if new != text:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                                       "RESULTS.md", "RESULTS.md (from the sources)"))
            print("RESULTS.md is out of date: run `python benchmarks/results_page.py`", file=sys.stderr)
            return 1
        return 0
    if new != text:
        RESULTS.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
