"""The main job on the shipped defaults, as `make demo` runs it.

While later stages are landing it does what exists: speak a word with espeak-ng, compute its log-mel and
plot it, and report the kernel backends. Returns what it wrote; the CLI does the printing.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from .features import FeatureConfig, load_audio, log_mel, save_audio


def speak_espeak(word: str, path: Path, voice: str = "en-us") -> None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (Debian package espeak-ng; `make` installs it)")
    subprocess.run([exe, "-v", voice, "-w", str(path), word], check=True, capture_output=True)


def plot_log_mel(lm, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    im = ax.imshow(lm, origin="lower", aspect="auto", cmap="magma")
    ax.set(title=title, xlabel="frame (10 ms)", ylabel="mel band")
    fig.colorbar(im, ax=ax, label="log magnitude")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_demo(out: str | Path, word: str = "speech") -> dict:
    from .ops import available_backends

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = FeatureConfig()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        speak_espeak(word, raw)
        wave = load_audio(raw, cfg.sample_rate)
    wav_path, png_path, npy_path = out / f"{word}.wav", out / f"{word}_logmel.png", out / f"{word}_logmel.npy"
    save_audio(wav_path, wave, cfg.sample_rate)
    lm = log_mel(wave, cfg).numpy()
    import numpy as np

    np.save(npy_path, lm)
    plot_log_mel(lm, png_path, f"log-mel of {word!r} (espeak-ng)")
    summary = {"word": word, "seconds": len(wave) / cfg.sample_rate, "log_mel_shape": list(lm.shape),
               "backends": available_backends(), "files": [str(wav_path), str(npy_path), str(png_path)]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["files"].append(str(out / "summary.json"))
    return summary
