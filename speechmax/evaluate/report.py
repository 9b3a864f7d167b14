"""report.html (self-contained: figures inlined as PNG data URIs) and the debugging summary in words."""
from __future__ import annotations

import base64
import html
import warnings
from pathlib import Path

import numpy as np

from .stats import top_confusions


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _ci(d: dict | None) -> str:
    if not d or d.get("rate") is None:
        return "n/a"
    return f"{_pct(d['rate'])} [{_pct(d['lo'])}, {_pct(d['hi'])}]"


def _hz(lo: float, hi: float) -> str:
    if hi < 1000:
        return f"{lo:.0f}-{hi:.0f} Hz"
    if lo < 1000:
        return f"{lo:.0f} Hz-{hi / 1000:.1f} kHz"
    return f"{lo / 1000:.1f}-{hi / 1000:.1f} kHz"


def anomaly_sentence(word: str, a: dict) -> str:
    """One anomaly of :func:`speechmax.evaluate.anomaly.find_anomalies` in words, with its effect and interval."""
    raw, stat = a["raw"], f"(z {a['effect']:+.1f}, 95% CI [{a['ci'][0]:+.1f}, {a['ci'][1]:+.1f}])"
    if a["kind"] == "band_energy":
        where = _hz(*a["band_hz"])
        text = (f"maximized '{word}' carries {raw:+.1f} dB at {where} that real '{word}' clips do not have" if raw > 0
                else f"maximized '{word}' lacks {-raw:.1f} dB at {where} that real '{word}' clips have")
    elif a["kind"] == "placement":
        text = (f"maximized '{word}' puts its {a['what']} {abs(raw):.0f} ms {'earlier' if raw < 0 else 'later'} "
                f"than real '{word}' clips ({a['maximized']:.0f} vs {a['real']:.0f} ms)")
    elif a["what"] == "noise floor level":
        text = (f"maximized '{word}' has a noise floor {abs(raw):.1f} dB {'higher' if raw > 0 else 'lower'} than "
                f"real '{word}' clips in its quietest frames")
    elif a["kind"] == "noise_floor":
        text = (f"maximized '{word}' has {'flatter (noise-like)' if raw > 0 else 'less flat (more tonal)'} quiet "
                f"frames than real '{word}' clips (spectral flatness {a['maximized']:.2f} vs {a['real']:.2f})")
    else:
        text = (f"the separate classifier hears '{a['heard_as']}' in maximized '{word}' (mean probability "
                f"{a['maximized']:.2f}, {a['real']:.2f} on real '{word}' clips)")
    return f"{text} {stat}"


def anomaly_summary(anomalies: dict, misclassified: dict | None, k: int = 4) -> list[str]:
    """The anomalies in words: a departure of time or noise floor that most words share is one sentence (it is the
    maximization's, not a word's); then the strongest remaining anomaly of a few words; the classes skipped; and
    the most common misclassification with the bands pulling toward it."""
    out, per = [], anomalies["per_class"]
    shared = {}   # (kind, what, sign) -> [(word, anomaly)] for departures in time and noise floor
    for w, found in per.items():
        for a in found:
            if a["kind"] in ("placement", "noise_floor"):
                shared.setdefault((a["kind"], a["what"], a["effect"] > 0), []).append((w, a))
    common = {key for key, hits in shared.items() if len(hits) >= max(3, len(per) / 2)}
    for key in sorted(common, key=lambda key: -len(shared[key])):
        hits = shared[key]
        w, a = hits[int(np.argsort([h[1]["raw"] for h in hits])[len(hits) // 2])]   # the median word
        out.append(f"In {len(hits)} of {len(per)} words: {anomaly_sentence(w, a)} -- shared by most words, a "
                   "trait of the maximization rather than of one word.")
    firsts = [(w, next(a for a in found if (a["kind"], a["what"], a["effect"] > 0) not in common))
              for w, found in per.items() if any((a["kind"], a["what"], a["effect"] > 0) not in common for a in found)]
    firsts.sort(key=lambda x: -abs(x[1]["effect"]))
    if firsts:
        out.append("Strongest anomalies (maximized samples against real clips of the word, z in real-clip SDs): "
                   + "; ".join(anomaly_sentence(w, a) for w, a in firsts[:k]) + ".")
    elif per and not common:
        out.append(f"Anomalies: no maximized class departs from its real clips by {anomalies['threshold']:g} "
                   "real-clip SDs or more.")
    if anomalies["skipped"]:
        w, why = next(iter(anomalies["skipped"].items()))
        out.append(f"Anomalies skipped for {len(anomalies['skipped'])} of {len(anomalies['band_z'])} classes "
                   f"(e.g. {w}: {why}).")
    by_word = (misclassified or {}).get("per_class", {})
    worst = min(by_word.items(), key=lambda x: -x[1]["wrong_count"], default=None)   # ties: the first word
    if worst and worst[1]["wrong_count"]:
        w, e = worst
        bands = ", ".join(_hz(*b) for b in e["pull_bands_hz"])
        out.append(f"Misclassified real clips: {misclassified['misclassified']}; the most common error is '{w}' "
                   f"given as '{e['most_common_wrong']}' ({e['wrong_count']} of {e['clips']} clips)"
                   + (f", pulled toward the prototypes of '{e['most_common_wrong']}' at {bands}" if bands else "")
                   + f" ({misclassified['method']} to the maximized prototypes).")
    return out


def debugging_summary(metrics: dict, labels) -> list[str]:
    """Sentences a researcher reads first: what the classifier hears best and worst, what maximization
    reveals it confuses, what the vocoder adds, and how the recipes compare."""
    out = []
    noise = metrics["noise_to_class"]
    best_run = max(noise, key=lambda k: noise[k]["overall"]["rate"] or 0)
    per = noise[best_run]["per_class"]
    ranked = sorted(per, key=lambda w: (per[w]["rate"], w))
    k = min(5, max(1, len(ranked) // 4))
    out.append(f"Best run: {best_run}, success {_ci(noise[best_run]['overall'])} (classifier and separate "
               f"classifier both give the target, mean over classes, 95% bootstrap CI).")
    unscored = metrics["settings"].get("unscored")
    if unscored:
        out.append(f"The separate classifier shares {len(labels) - len(unscored)} of the classifier's "
                   f"{len(labels)} labels: success and its rates count those only (not scored: "
                   f"{', '.join(unscored)}).")
    without = metrics["data"].get("labels_without_clips")
    if without:
        out.append(f"The real clips hold no example of {', '.join(without)}: class to class, the vocoder control "
                   "and the listening set have nothing of them.")
    out.append("Classes the model 'hears' best (maximized samples another classifier also recognizes): "
               + ", ".join(f"{w} {_pct(per[w]['rate'])}" for w in ranked[::-1][:k]) + ".")
    out.append("Classes it hears worst (its maximized examples do not transfer — the model keys on cues another "
               "model does not share): " + ", ".join(f"{w} {_pct(per[w]['rate'])}" for w in ranked[:k]) + ".")
    conf = top_confusions(np.array(noise[best_run]["heatmap_separate"], dtype=float), labels, k=5)
    if conf:
        out.append("Confusions maximization reveals (target -> what the separate classifier hears, mean "
                   "probability): " + "; ".join(f"{c['target']} -> {c['heard_as']} {c['mean_prob']:.2f}"
                                                 for c in conf) + ".")
    for mode in ("features", "latent"):
        p, s = noise.get(f"paper/{mode}"), noise.get(f"speechmax/{mode}")
        if p and s:
            out.append(f"{mode} mode: the paper's preset reaches {_ci(p['overall'])}, speechmax's recipe "
                       f"{_ci(s['overall'])} (classifier alone: {_pct(p['hit_rate']['classifier'])} vs "
                       f"{_pct(s['hit_rate']['classifier'])}). Where the classifier alone is far above the success "
                       f"rate, the ascent found features only this classifier responds to.")
    c2c = metrics.get("class_to_class", {})
    for mode, m in c2c.items():
        mat = np.array(m["matrix"], dtype=float)
        np.fill_diagonal(mat, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # a word without clips: an all-NaN row, mean NaN
            hard_src = np.nanmean(mat, axis=1)
            hard_tgt = np.nanmean(mat, axis=0)
        if np.isfinite(hard_src).any():
            a, b = int(np.nanargmin(hard_src)), int(np.nanargmin(hard_tgt))
            out.append(f"Class to class ({mode}): {_pct(m['success_off_diagonal'])} of real clips moved to another "
                       f"word for both classifiers; clips of '{labels[a]}' were the hardest to move "
                       f"({_pct(hard_src[a])}), '{labels[b]}' the hardest word to move toward ({_pct(hard_tgt[b])}).")
    vc = metrics.get("vocoder_control", {})
    for g, v in vc.get("groups", {}).items():
        parts = [f"features {_ci(v['features'])}"]
        for kind in ("wavenet", "griffinlim"):
            if v.get(kind):
                parts.append(f"{kind} {_ci(v[kind])} (keeps the pre-vocoder label {_pct(v[kind]['agrees_with_features'])})")
        out.append(f"Vocoder control, {g}: separate classifier gives the word on " + ", ".join(parts) + ".")
    if vc.get("note"):
        out.append(vc["note"] + ".")
    if metrics.get("anomalies"):
        out += anomaly_summary(metrics["anomalies"], metrics.get("misclassified"))
    return out


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _table(rows, header) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%;display:block;margin:.6em 0}
.summary li{margin:.3em 0}.muted{color:#666;font-size:.9em}"""


def _anomaly_section(an: dict, wrong: dict | None, figs: dict) -> str:
    st = an["settings"]
    parts = [f"<h2>6. Anomalies</h2><p>Per word, the {st['maximized_per_class']} maximized sample(s) of "
             f"<code>{html.escape(st['source'])}</code> against the word's real clips: effect = "
             f"{html.escape(st['effect'])}; reported when |effect| &ge; {an['threshold']:g} and the "
             f"{100 * st['level']:.0f}% bootstrap interval ({st['bootstrap']} resamples, seed {st['seed']}) stays on "
             f"one side of 0, at most {an['top']} per word. The same detectors run on any model; they know nothing "
             "of what it learnt.</p>", _img(figs["anomalies"])]
    rows = [[w, a["rank"], a["kind"], a["what"] + (f" {_hz(*a['band_hz'])}" if "band_hz" in a else ""),
             f"{a['raw']:+g} {a['unit']}".strip(), f"{a['effect']:+.1f}", f"[{a['ci'][0]:+.1f}, {a['ci'][1]:+.1f}]"]
            for w, found in an["per_class"].items() for a in found]
    if rows:
        parts.append(f"<details><summary>every anomaly reported ({len(rows)})</summary>"
                     + _table(rows, ["word", "rank", "kind", "what", "difference", "z", "95% CI"]) + "</details>")
    if an["skipped"]:
        parts.append("<p class='muted'>Skipped: " + html.escape("; ".join(f"{w}: {r}" for w, r in
                                                                         an["skipped"].items())) + ".</p>")
    if wrong:
        parts.append(f"<h3>Misclassified clips against the prototypes</h3><p>{wrong['misclassified']} real clips the "
                     f"classifier gets wrong, each beside the nearest prototype ({html.escape(wrong['method'])}) of "
                     "the word it was given (left) and of its own word (right); the cyan boxes are the bands where "
                     "the clip is nearer the wrong word. Worst cases first (nearest the wrong prototype relative "
                     "to both distances).</p>")
        rows = [[w, e["clips"], e["misclassified"], e["most_common_wrong"] or "", e["wrong_count"],
                 ", ".join(_hz(*b) for b in e["pull_bands_hz"])]
                for w, e in wrong["per_class"].items() if e["misclassified"]]
        if rows:
            parts.append("<details><summary>per class</summary>" + _table(
                rows, ["word", "clips", "misclassified", "most common wrong word", "of them", "bands pulling to it"])
                + "</details>")
        for k, case in enumerate(wrong["cases"]):
            key = next(f for f in figs if f.startswith(f"misclassified {k + 1}:"))
            when = f", {case['pull_ms'][0]}-{case['pull_ms'][1]} ms" if case["pull_ms"] else ""
            parts.append(f"<h4>{html.escape(key)}</h4><p class='muted'>nearer the wrong prototype at "
                         f"{html.escape(', '.join(_hz(*b) for b in case['pull_bands_hz']) or 'no band')}{when}; "
                         f"margin {case['margin']:+.2f}</p>{_img(figs[key])}")
    return "\n".join(parts)


def write_report(path: Path, metrics: dict, figs: dict) -> Path:
    s = metrics["settings"]
    t = metrics["timing"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>speechmax evaluation</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>speechmax evaluation report</h1>",
             f"<p class='muted'>speechmax {html.escape(metrics['version'])} · "
             f"{'quick' if s['quick'] else 'full'} run · {s['per_class']} noise starts per class and run · "
             f"seed {s['seed']} · {s['threads']} thread(s)"
             + (f" · {s['world_size']} torchrun ranks" if s.get("world_size", 1) > 1 else "")
             + f" · total {t['total']:.0f} s of compute "
             f"(measured; this sitting {t.get('this sitting', t['total']):.0f} s; per stage below)<br>"
             f"models: {html.escape(', '.join(f'{k}={v}' for k, v in s['models'].items()))}<br>"
             f"clips: {html.escape(metrics['data']['source'])}; classifier accuracy on them "
             f"{_pct(metrics['data']['classifier_accuracy'])}, separate {_pct(metrics['data']['separate_accuracy'])}</p>",
             "<h2>Debugging summary</h2><ul class='summary'>"
             + "".join(f"<li>{html.escape(x)}</li>" for x in metrics["summary"]) + "</ul>",
             "<h2>1. Noise → class</h2>",
             "<p>Success: the classifier and the separate classifier (another architecture and seed) both give the "
             "target. Intervals: 95% percentile bootstrap over starts (overall: stratified by class).</p>"]
    rows = []
    for name, m in metrics["noise_to_class"].items():
        rows.append([name, _ci(m["overall"]), _pct(m["hit_rate"]["classifier"]), _pct(m["hit_rate"]["separate"]),
                     f"{m['objective']['before']:.3f} → {m['objective']['after']:.3f}", m["nan_stopped"],
                     f"{m['seconds']:.1f}"])
    parts.append(_table(rows, ["run (recipe/mode)", "success [95% CI]", "classifier hit", "separate hit",
                               "objective", "stopped (NaN)", "seconds"]))
    for key in [k for k in figs if k.startswith("success ")] + [k for k in figs if k.startswith("heatmap ")]:
        parts.append(f"<h3>{html.escape(key)}</h3>{_img(figs[key])}")
    parts.append("<h2>2. Vocoder control</h2><p>The separate classifier on the features before the vocoder, and on "
                 "the same samples after WaveNet and after Griffin-Lim, re-featurized from the audio. If a sample "
                 "is recognised before the vocoder but not after, the vocoder — not the classifier — lost it.</p>")
    vc = metrics["vocoder_control"]
    rows = []
    for g, v in vc["groups"].items():
        rows.append([g, v["n"], _ci(v["features"]), _ci(v.get("wavenet")), _ci(v.get("griffinlim")),
                     _pct((v.get("wavenet") or {}).get("agrees_with_features")),
                     _pct((v.get("griffinlim") or {}).get("agrees_with_features"))])
    parts.append(_table(rows, ["group", "n", "pre-vocoder", "WaveNet", "Griffin-Lim", "WaveNet keeps label",
                               "Griffin-Lim keeps label"]))
    if vc.get("note"):
        parts.append(f"<p class='muted'>{html.escape(vc['note'])}</p>")
    parts.append(_img(figs["vocoder control"]))
    rows = []
    for w in metrics["noise_to_class"][next(iter(metrics["noise_to_class"]))]["per_class"]:
        row = [w]
        for g, v in vc["groups"].items():
            pc = v["per_class"].get(w, {})
            row += [_pct(pc.get("features")), _pct(pc.get("wavenet")), _pct(pc.get("griffinlim"))]
        rows.append(row)
    header = ["word"] + [f"{g}: {k}" for g in vc["groups"] for k in ("pre", "WaveNet", "GL")]
    parts.append(f"<details><summary>per class</summary>{_table(rows, header)}</details>")
    parts.append(f"<h2>3. Class to class</h2><p>Real clips of word A climbed toward word B "
                 f"({html.escape(s.get('recipe', 'speechmax'))} recipe); "
                 "cell = share of starts both classifiers then give as B.</p>")
    rows = [[mode, m["clips"], m["starts"], _pct(m["success_off_diagonal"]), _pct(m["hit_rate"]["classifier"]),
             _pct(m["hit_rate"]["separate"]), f"{m['seconds']:.1f}"] for mode, m in metrics["class_to_class"].items()]
    parts.append(_table(rows, ["mode", "clips", "starts", "success (A ≠ B)", "classifier hit", "separate hit",
                               "seconds"]))
    for key in [k for k in figs if k.startswith("class-to-class ")]:
        parts.append(f"<h3>{html.escape(key)}</h3>{_img(figs[key])}")
    parts.append("<h2>4. Latents and spectrograms</h2>")
    parts.append(f"<p>{metrics['tsne']['points']} latents, {metrics['tsne']['clips']} real clips "
                 f"({metrics['tsne']['misclassified_starts']} misclassified by the classifier).</p>")
    parts.append(_img(figs["t-SNE"]))
    for key in [k for k in figs if k.startswith("spectrograms ")]:
        parts.append(f"<h3>{html.escape(key)}</h3>{_img(figs[key])}")
    ls = metrics["listening_set"]
    parts.append(f"<h2>5. Listening set</h2><p>{ls['clips']} clips vocoded by {html.escape(ls['vocoder'])} in "
                 f"<code>{html.escape(ls['path'])}</code>; serve it with <code>speechmax listen --set "
                 f"{html.escape(ls['path'])} --db answers.db</code>.</p>")
    parts.append(_table(sorted(ls["per_condition"].items()), ["condition", "clips"]))
    if metrics.get("anomalies"):
        parts.append(_anomaly_section(metrics["anomalies"], metrics.get("misclassified"), figs))
    parts.append("<h2>Timing</h2><p>A noise run too big to do at once goes one target at a time and may span "
                 "sittings and machines: its seconds are the compute its pieces measured, and the total adds the "
                 "compute earlier sittings measured to this sitting's wall time.</p>"
                 + _table([[k, f"{v:.1f}"] for k, v in t.items()], ["stage", "seconds"]))
    pieces = [[name, cpu, f"{sec:.1f}"] for name, m in metrics["noise_to_class"].items()
              for cpu, sec in m.get("seconds_by_cpu", {}).items()]
    if pieces:
        parts.append("<h3>Noise runs done in pieces, by the CPU that measured them</h3>"
                     + _table(pieces, ["run", "CPU", "seconds"]))
    parts.append("</body></html>")
    Path(path).write_text("\n".join(parts))
    return Path(path)
