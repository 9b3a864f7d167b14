"""The report's figures, each written as a PNG: heatmaps (Fig. 5), success rates with intervals, the
class-to-class matrix, the t-SNE of latents (Fig. 4), the before/after spectrogram grid (Fig. 2) and the
vocoder control."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(path: Path, matrix, labels, title: str, xlabel: str, ylabel: str, vmax: float = 1.0) -> Path:
    """A labelled n x n matrix in [0, vmax] (NaN cells blank)."""
    plt = _plt()
    m = np.ma.masked_invalid(np.asarray(matrix, dtype=np.float64))
    n = len(labels)
    fig, ax = plt.subplots(figsize=(9.5, 8.5))
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=vmax, aspect="equal")
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def success_chart(path: Path, runs: dict, labels, title: str) -> Path:
    """Per-class success rate with its 95% interval, one marker series per run ({name: per_class dict})."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(13, 4.2))
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(runs))
    for k, (name, per_class) in enumerate(runs.items()):
        rate = np.array([per_class.get(w, {}).get("rate") or 0.0 for w in labels])
        lo = np.array([per_class.get(w, {}).get("lo") or 0.0 for w in labels])
        hi = np.array([per_class.get(w, {}).get("hi") or 0.0 for w in labels])
        pos = x - 0.4 + width * (k + 0.5)
        ax.bar(pos, rate, width, label=name, alpha=0.85)
        ax.errorbar(pos, rate, yerr=[rate - lo, hi - rate], fmt="none", ecolor="black", elinewidth=0.7, capsize=1.5)
    ax.set_xticks(x, labels, rotation=90, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% CI)")
    ax.set_title(title, loc="left", fontsize=10)  # left, so the legend above the right end does not cover it
    ax.legend(fontsize=8, ncol=min(4, len(runs)), loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def spectrogram_grid(path: Path, before, after, labels, title: str, per_row: int = 5) -> Path:
    """For each class a pair of panels (before | after) of its first sample, ``per_row`` classes a row."""
    plt = _plt()
    before, after = np.asarray(before), np.asarray(after)
    n = len(labels)
    rows = (n + per_row - 1) // per_row
    lo, hi = float(min(before.min(), after.min())), float(max(before.max(), after.max()))
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(2 * per_row * 1.25, rows * 1.25), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, word in enumerate(labels):
        r, c = divmod(i, per_row)
        for j, (m, tag) in enumerate(((before[i], "before"), (after[i], "after"))):
            ax = axes[r, 2 * c + j]
            ax.imshow(m, origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi)
            ax.set_title(f"{word} · {tag}", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def tsne_plot(path: Path, points, classes, speakers, stage, misclassified, labels, title: str) -> Path:
    """Two panels of the same 2-D embedding: coloured by class, and by speaker. Circles are the encoded real
    clips (before), triangles the latents after the ascent; a black cross marks starts whose real clip the
    classifier got wrong."""
    plt = _plt()
    points, classes, stage = np.asarray(points), np.asarray(classes), np.asarray(stage)
    misclassified = np.asarray(misclassified, dtype=bool)
    spk_names = sorted(set(speakers))
    spk = np.array([spk_names.index(s) for s in speakers])
    fig, axes = plt.subplots(1, 2, figsize=(13, 6))
    for ax, colour, cmap, what in ((axes[0], classes, "gist_ncar", "class (source clip before, target after)"),
                                   (axes[1], spk, "tab20", f"speaker of the start ({len(spk_names)} speakers)")):
        for st, marker, size, edge in (("after", "^", 10, "none"), ("before", "o", 46, "black")):
            sel = stage == st
            ax.scatter(points[sel, 0], points[sel, 1], c=colour[sel], cmap=cmap, vmin=0,
                       vmax=max(1, colour.max()), marker=marker, s=size, alpha=0.9, edgecolors=edge,
                       linewidths=0.6 if edge != "none" else 0)
        bad = misclassified & (stage == "before")
        ax.scatter(points[bad, 0], points[bad, 1], marker="x", c="black", s=40, linewidths=1.2,
                   label="misclassified start")
        ax.set_title(f"coloured by {what}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    before = stage == "before"
    for c in np.unique(classes[before]):
        xy = points[before & (classes == c)].mean(0)
        axes[0].annotate(labels[int(c)], xy, fontsize=6, ha="center")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def control_chart(path: Path, control: dict, title: str) -> Path:
    """Separate-classifier target accuracy before the vocoder, after WaveNet and after Griffin-Lim, per group."""
    plt = _plt()
    groups = list(control)
    kinds = [k for k in ("features", "wavenet", "griffinlim") if any(control[g].get(k) is not None for g in groups)]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = np.arange(len(groups))
    width = 0.8 / len(kinds)
    for k, kind in enumerate(kinds):
        vals = [control[g].get(kind) or {} for g in groups]
        rate = np.array([v.get("rate") or 0.0 for v in vals])
        lo = np.array([v.get("lo") or 0.0 for v in vals])
        hi = np.array([v.get("hi") or 0.0 for v in vals])
        pos = x - 0.4 + width * (k + 0.5)
        ax.bar(pos, rate, width, label={"features": "pre-vocoder features"}.get(kind, kind))
        ax.errorbar(pos, rate, yerr=[rate - lo, hi - rate], fmt="none", ecolor="black", elinewidth=0.7, capsize=2)
    ax.set_xticks(x, groups, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set(ylabel="separate classifier gives the word", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _hz_ticks(ax, edges, axis: str, every: int = 10):
    """Mel-band ticks labelled by the band's lower edge in Hz (kHz above 1 kHz)."""
    idx = list(range(0, len(edges), every))
    names = [f"{edges[i][0] / 1000:.1f}k" if edges[i][0] >= 1000 else f"{edges[i][0]:.0f}" for i in idx]
    (ax.set_xticks if axis == "x" else ax.set_yticks)(idx, names, fontsize=7)


def band_heatmap(path: Path, z, labels, edges, threshold: float, title: str, vmax: float = 10.0) -> Path:
    """Class x mel band standardized differences (maximized vs real clips), diverging around 0 and clipped at
    +-vmax; rows of skipped classes (None) are blank; the colour bar marks the reporting threshold."""
    plt = _plt()
    m = np.ma.masked_invalid(np.array([[np.nan if v is None else v for v in row] for row in z], dtype=np.float64))
    fig, ax = plt.subplots(figsize=(11, 0.22 * len(labels) + 1.8))
    im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    _hz_ticks(ax, edges, "x")
    ax.set(xlabel="mel band (lower edge, Hz)", ylabel="target", title=title)
    bar = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="z (real-clip SDs)")
    for t in (-threshold, threshold):
        bar.ax.axhline(t, color="black", linewidth=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def prototype_case(path: Path, clip, wrong, true, names, edges, bands, title: str) -> Path:
    """A misclassified clip between the nearest prototypes of the word it was given and of its own word, one
    colour scale; ``bands``: [(first, last), ...] mel-band spans pulling it to the wrong word, marked on the clip."""
    plt = _plt()
    panels = [np.asarray(wrong), np.asarray(clip), np.asarray(true)]
    lo, hi = min(float(p.min()) for p in panels), max(float(p.max()) for p in panels)
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8), sharey=True)
    for ax, m, name in zip(axes, panels, names):
        ax.imshow(m, origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("frame", fontsize=7)
        ax.tick_params(labelsize=6)
    for a, b in bands:
        axes[1].axhspan(a - 0.5, b + 0.5, fill=False, edgecolor="cyan", linewidth=1.0)
    _hz_ticks(axes[0], edges, "y", every=20)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
