"""Step 4, figures: the t-SNE of the prior's latents (the paper's Fig. 4), the spectrogram grids before/after
(Fig. 2), and the pictures of steps 1 and 3 (mean-softmax heatmaps, success charts, class-to-class matrices)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..maximize.recipes import RECIPES
from . import figures
from .inputs import Clips
from .noise import MODES


def draw_figures(noise: dict, c2c: dict, keep: dict, labels, fig_dir: Path, per_class: int, recipe: str) -> dict:
    """The figures of the noise runs (``noise``: summaries by recipe/mode), of class to class (``c2c``: metrics
    by mode) and of the kept features (``keep``: by mode); {title: PNG path}."""
    figs = {}
    for name, m in noise.items():
        slug = name.replace("/", "-")
        figs[f"heatmap {name}"] = figures.heatmap(
            fig_dir / f"heatmap-{slug}.png", np.array(m["heatmap_separate"], dtype=float), labels,
            f"{name}: separate classifier's mean softmax per target (n = {per_class} per class)",
            "class heard by the separate classifier", "target")
    for r in RECIPES:
        figs[f"success {r}"] = figures.success_chart(
            fig_dir / f"success-{r}.png", {f"{r}/{m}": noise[f"{r}/{m}"]["per_class"] for m in MODES},
            labels, f"noise -> class, {r} recipe: both classifiers give the target (95% bootstrap CI)")
    for mode in MODES:
        figs[f"class-to-class {mode}"] = figures.heatmap(
            fig_dir / f"class-to-class-{mode}.png", np.array(c2c[mode]["matrix"], dtype=float), labels,
            f"class to class ({mode} mode): real clips of A climbed toward B, success rate",
            "target B", "source word A")
        k = keep[mode]
        first = [int(np.flatnonzero(k["targets"] == c)[0]) for c in range(len(labels))]
        figs[f"spectrograms {mode}"] = figures.spectrogram_grid(
            fig_dir / f"spectrograms-{mode}.png", k["before"][first].numpy(), k["after"][first].numpy(), labels,
            f"noise -> class, {mode} mode ({recipe} recipe): start | result per target")
    return figs


def tsne(res, clips: Clips, src, clip_pred, labels, fig_dir: Path, seed: int, max_points: int = 2500):
    """The t-SNE of the latent class-to-class run ``res`` (start j of its first target is clip ``src[j]``): the
    real clips encoded, and up to ``max_points`` latents after the ascent. Returns the figure and its metrics."""
    from sklearn.manifold import TSNE   # scikit-learn takes a second to import and only the t-SNE needs it

    n_clips = len(src)
    rng = np.random.default_rng(seed)
    after = np.arange(len(res.targets))
    if len(after) + n_clips > max_points:
        after = np.sort(rng.choice(after, max_points - n_clips, replace=False))
    before_z = res.latents_before[:n_clips].numpy()          # start j of the first target = clip j
    pts = np.concatenate([before_z, res.latents[after].numpy()])
    classes = np.concatenate([clips.labels[src], res.targets.numpy()[after]])
    spk = [clips.speakers[i] for i in src] + [clips.speakers[src[j]] for j in res.start.numpy()[after]]
    stage = np.array(["before"] * n_clips + ["after"] * len(after))
    wrong = np.concatenate([clip_pred[src] != clips.labels[src], np.zeros(len(after), bool)])
    emb = TSNE(n_components=2, perplexity=min(30.0, max(2.0, (len(pts) - 1) / 3)), init="pca",
               random_state=seed).fit_transform(pts.astype(np.float64))
    path = figures.tsne_plot(fig_dir / "tsne-latent.png", emb, classes, spk, stage, wrong, labels,
                             "t-SNE of the prior's latents: real clips encoded (o) and after climbing toward each "
                             "word (^); x = a start the classifier misclassified")
    return path, {"points": int(len(pts)), "clips": n_clips, "misclassified_starts": int(wrong.sum())}
