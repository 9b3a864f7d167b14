"""How a waveform model is reached from log-mel: Griffin-Lim phase iterations per MelToWave call, chosen by
measurement -- the model's hit rate on the written .wav files (re-read from disk), the separate classifier's,
and start-steps/s -- and the waveform path's cost against a log-mel model of the same body (issue 18).

    python benchmarks/external_wave_path.py KWS_DIR [--threads 2] [--starts 3]

KWS_DIR holds kws.pt + labels.txt written by the README's worked example (`python kws.py corpus KWS_DIR`).
Prints one JSON line per setting, then the speed comparison.
"""
import argparse
import json
import tempfile
import time

import torch
import torch.nn as nn

from speechmax.maximize import maximize
from speechmax.maximize.output import score_written_audio, write_samples
from speechmax.models.external import ExternalClassifier
from speechmax.models.registry import load_classifier_any, load_model
from speechmax.ops.maximize import ascent_step_ref

WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def hit_rates(kws: str, threads: int, starts: int, iters_list=(0, 2, 8, 16), modes=("latent", "features")):
    torch.set_num_threads(threads)
    sep, prior = load_model("classifier-separate", kind="classifier"), load_model("prior", kind="prior")
    for mode in modes:
        for iters in iters_list:
            clf = load_classifier_any(f"{kws}/kws.pt", labels=f"{kws}/labels.txt", input="waveform")
            clf.to_wave.iters = iters
            t = time.perf_counter()
            res = maximize(clf, WORDS, n=starts, mode=mode, prior=prior if mode == "latent" else None, seed=0,
                           separate=sep)
            secs = time.perf_counter() - t
            with tempfile.TemporaryDirectory() as d:
                write_samples(res, d, vocoder="griffinlim", seed=0)
                audio = score_written_audio(d, clf, sep)
            yield {"mode": mode, "iters": iters, "start_steps_per_s": round(len(res.targets) * res.settings["steps"] / secs, 1),
                   "hit_internal": round(res.hit_rate("classifier"), 4), "hit_written_audio": audio["classifier"],
                   "separate_written_audio": audio["separate"]}


class LogMelBody(nn.Module):
    """The same network over speechmax's log-mel: its first 20 cepstra (DCT-II of the 80 bands), then the body."""

    def __init__(self, waveform_model):
        super().__init__()
        k = torch.arange(80)
        self.register_buffer("dct", torch.cos(torch.pi / 80 * (k[None] + 0.5) * torch.arange(20)[:, None]))
        self.body = waveform_model

    def forward(self, log_mel):
        m = self.body
        x = m.norm(self.dct @ log_mel)
        x = torch.relu(m.conv1(x))
        x = torch.relu(m.conv2(x)) + x
        x = torch.relu(m.conv3(x))
        return m.out(x.mean(-1))


def speed(kws: str, threads: int, batch: int = 64, repeats: int = 5) -> dict:
    """Start-steps/s of one autograd ascent step at ``batch``: the waveform model through MelToWave (at its default
    iterations) against the same body reading log-mel directly."""
    torch.set_num_threads(threads)
    wave = load_classifier_any(f"{kws}/kws.pt", labels=f"{kws}/labels.txt", input="waveform")
    python_model = torch.jit.load(f"{kws}/kws.pt")
    logmel = ExternalClassifier(LogMelBody(python_model), wave.cfg.labels, input="log-mel")

    def rate(clf):
        x, t = torch.randn(batch, 80, 101) * 0.1 - 4, torch.zeros(batch, dtype=torch.int64)
        ascent_step_ref(clf, None, x, t)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ascent_step_ref(clf, None, x, t)
            times.append(time.perf_counter() - t0)
        return batch / sorted(times)[repeats // 2]

    r_mel, r_wave = rate(logmel), rate(wave)
    return {"batch": batch, "threads": threads, "log_mel_start_steps_per_s": round(r_mel, 1),
            "waveform_start_steps_per_s": round(r_wave, 1), "waveform_iters": wave.to_wave.iters,
            "overhead": round(r_mel / r_wave, 2)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kws")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--speed-only", action="store_true")
    a = ap.parse_args()
    if not a.speed_only:
        for row in hit_rates(a.kws, a.threads, a.starts):
            print(json.dumps(row), flush=True)
    print(json.dumps(speed(a.kws, a.threads)))
