"""How a waveform model is reached from log-mel, and what it costs (issue 18): MelToWave's settings (Griffin-Lim
iterations, the phase they start from, the relu on the magnitude) chosen by measurement -- the model's hit rate
on the written .wav files (re-read from disk), the separate classifier's, start-steps/s -- and one autograd
ascent step at batch 64 on the waveform path, now and as it was before, against a log-mel model with the same
body.

    python benchmarks/external_wave_path.py KWS_DIR [--threads 2] [--starts 3] [--speed-only]
        [--modes latent,features] [--settings centered:0:noclip,zero:2:clip,...]

KWS_DIR holds kws.pt + labels.txt written by the README's worked example (`python kws.py corpus KWS_DIR`): a
keyword spotter over raw 16 kHz audio with its own MFCC front end (STFT, 40 mel bands, log, 20 cepstra) and
three convolutions. Prints one JSON line per (mode, setting), then the speed comparison.
"""
import argparse
import json
import statistics
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
# (initial phase, Griffin-Lim iterations, relu on the magnitude) per MelToWave call
SETTINGS = (("zero", 0, True), ("zero", 1, True), ("zero", 2, True), ("zero", 16, True), ("centered", 0, True),
            ("centered", 1, True), ("centered", 2, True), ("centered", 0, False))


def hit_rates(kws: str, threads: int, starts: int, settings=SETTINGS, modes=("latent", "features")):
    torch.set_num_threads(threads)
    sep, prior = load_model("classifier-separate", kind="classifier"), load_model("prior", kind="prior")
    for mode in modes:
        for init, iters, clip in settings:
            clf = load_classifier_any(f"{kws}/kws.pt", labels=f"{kws}/labels.txt", input="waveform")
            clf.to_wave.init, clf.to_wave.iters, clf.to_wave.clip = init, iters, clip
            t = time.perf_counter()
            res = maximize(clf, WORDS, n=starts, mode=mode, prior=prior if mode == "latent" else None, seed=0,
                           separate=sep)
            secs = time.perf_counter() - t
            with tempfile.TemporaryDirectory() as d:
                write_samples(res, d, vocoder="griffinlim", seed=0)
                audio = score_written_audio(d, clf, sep)
            yield {"mode": mode, "init": init, "iters": iters, "clip": clip,
                   "start_steps_per_s": round(len(res.targets) * res.settings["steps"] / secs, 1),
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


class _Before(nn.Module):
    """MelToWave as it was before issue 18's speed work, in its place: torch.stft / torch.istft (the reference
    twin, ``forward_ref``) with 2 Griffin-Lim iterations from zero phase and the relu."""

    def __init__(self, to_wave):
        super().__init__()
        self.to_wave = to_wave
        to_wave.init, to_wave.iters, to_wave.clip = "zero", 2, True

    def forward(self, log_mel):
        return self.to_wave.forward_ref(log_mel)


def speed(kws: str, threads: int, batch: int = 64, rounds: int = 9) -> dict:
    """Start-steps/s of one autograd ascent step (features mode, the prob objective) at ``batch``: the waveform
    model through MelToWave (its defaults), the same through MelToWave as it was before (:class:`_Before`), and
    the same body reading log-mel directly; and where a waveform step's milliseconds go (MelToWave forward +
    backward, now and before; the model forward + backward on the waveform, also under TorchScript's optimizing
    executor, which ExternalClassifier turns off). Variants alternate within each round; medians over ``rounds``."""
    torch.set_num_threads(threads)
    wave = load_classifier_any(f"{kws}/kws.pt", labels=f"{kws}/labels.txt", input="waveform")
    before = load_classifier_any(f"{kws}/kws.pt", labels=f"{kws}/labels.txt", input="waveform")
    before.to_wave = _Before(before.to_wave)
    logmel = ExternalClassifier(LogMelBody(torch.jit.load(f"{kws}/kws.pt")), wave.cfg.labels, input="log-mel")
    x = torch.randn(batch, 80, 101, generator=torch.Generator().manual_seed(0)) * 0.1 - 4
    t = torch.zeros(batch, dtype=torch.int64)
    audio = wave.to_wave(x).detach()

    def step(clf):
        return lambda: ascent_step_ref(clf, None, x.clone(), t)

    def to_wave(module):
        def run():
            v = x.clone().requires_grad_(True)
            y = module(v)
            y.backward(torch.ones_like(y))
        return run

    def model_on_waveform():
        v = audio.clone().requires_grad_(True)
        wave.classify_waveform(v).sum().backward()

    def model_on_waveform_optimized_jit():   # what ExternalClassifier._run's optimized_execution(False) gives up
        v = audio.clone().requires_grad_(True)
        with torch.jit.optimized_execution(True):
            out = wave.module(v)
        out.sum().backward()

    cases = {"log_mel": step(logmel), "waveform": step(wave), "waveform_before": step(before),
             "mel_to_wave_fwd_bwd": to_wave(wave.to_wave), "mel_to_wave_before_fwd_bwd": to_wave(before.to_wave),
             "model_on_waveform_fwd_bwd": model_on_waveform,
             "model_on_waveform_fwd_bwd_optimized_jit": model_on_waveform_optimized_jit}
    times = {k: [] for k in cases}
    for f in cases.values():
        for _ in range(3):   # the profiling executor specialises a TorchScript graph over its first calls
            f()
    for _ in range(rounds):
        for k, f in cases.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    ms = {k: round(1e3 * statistics.median(v), 1) for k, v in times.items()}
    rate = {k: round(batch / (ms[k] / 1e3), 1) for k in ("log_mel", "waveform", "waveform_before")}
    tw = wave.to_wave
    return {"batch": batch, "threads": threads, "mel_to_wave": {"init": tw.init, "iters": tw.iters, "clip": tw.clip},
            "log_mel_start_steps_per_s": rate["log_mel"], "waveform_start_steps_per_s": rate["waveform"],
            "overhead": round(rate["log_mel"] / rate["waveform"], 2),
            "waveform_before_start_steps_per_s": rate["waveform_before"],
            "overhead_before": round(rate["log_mel"] / rate["waveform_before"], 2), "ms": ms}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kws")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--modes", default="latent,features")
    ap.add_argument("--settings", default=None, help="INIT:ITERS:clip|noclip,... (default: SETTINGS)")
    a = ap.parse_args()
    settings = SETTINGS if a.settings is None else tuple(
        (init, int(iters), clip == "clip") for init, iters, clip in (x.split(":") for x in a.settings.split(",")))
    if not a.speed_only:
        for row in hit_rates(a.kws, a.threads, a.starts, settings, tuple(a.modes.split(","))):
            print(json.dumps(row), flush=True)
    print(json.dumps(speed(a.kws, a.threads)))
