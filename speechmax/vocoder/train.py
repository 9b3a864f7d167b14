"""Training the WaveNet vocoder: random frame-aligned windows of speech, teacher-forced cross-entropy on
mu-law classes, Adam, an EMA of the weights (what ships), resumable from ``OUT/last``.

Data: any folders of 16 kHz speech (the word corpus in v0.02 layout, the continuous-speech corpus).
Split by speaker: ``<speaker>_nohash_<k>.wav`` names, else the parent folder is the speaker; TensorFlow's
hash rule decides the split. Each clip is cut into segments of at most ``segment_seconds``; a segment's
log-mel is computed once, on the whole segment, as at inference.

Under ``torchrun`` (data-parallel, DistributedDataParallel over gloo on CPU): every rank draws the same global batch
of windows for a step (the draws depend only on (seed, step)) and runs its contiguous slice of it; the ranks'
gradients are averaged, so every step is the one-process step on the whole batch. Rank 0 alone featurizes first
(the others then read its cache), validates, measures and writes the log and the checkpoints; a run resumes on
any number of ranks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed
from ..data.dataset import vocoder_files
from ..data.words import WORDS
from ..features import AudioError, FeatureConfig, load_audio, log_mel, mu_law_encode
from ..models.registry import load_model
from ..distributed import World
from ..models.wavenet import WaveNet, WaveNetConfig, frames_needed, preemphasize, save_wavenet
from ..training import EMA, JsonLog, StepTimer, load_checkpoint, save_checkpoint
from .quality import vocoder_quality


@dataclass(frozen=True)
class VocoderTrainConfig:
    batch: int = 8
    window: int = 4000              # samples per training window (a multiple of hop)
    steps: int = 200_000
    lr: float = 1e-3
    lr_half_life: int = 40_000      # lr halves every this many steps ...
    lr_min: float = 5e-5            # ... down to this floor
    ema_decay: float = 0.9995
    grad_clip: float = 1.0
    max_word_clips: int = 12_000    # word clips used (the continuous corpus is always used whole)
    segment_seconds: float = 2.0
    silent_keep: float = 0.1        # probability of keeping a near-silent window
    checkpoint_every: int = 100
    validate_every: int = 1000
    quality_every: int = 1000       # separate-classifier accuracy + STOI on a few test words (the curve)
    quality_per_class: int = 1
    snapshot_every: int = 5000      # resynthesized test words written to OUT/snapshots/stepNNNNNNN/
    bf16: bool = False
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Segments:
    """Concatenated training material: audio as mu-law classes, log-mel frames per segment."""
    audio: list[np.ndarray]          # int16 mu-law classes per segment (samples,)
    mel: list[np.ndarray]            # float16 log-mel per segment (n_mels, frames)
    sources: list[str]

    def __len__(self):
        return len(self.audio)


def build_segments(files: list[Path], cfg: FeatureConfig, segment_seconds: float, progress=None,
                   preemphasis: float = 0.0) -> Segments:
    """Cut ``files`` into segments: the mu-law classes of the (pre-emphasised, for a noise-shaped model) audio
    and the log-mel of the plain audio, as at inference."""
    seg_len = int(segment_seconds * cfg.sample_rate) // cfg.hop_length * cfg.hop_length
    audio, mel, sources, bad = [], [], [], []
    for p in files:
        try:
            wave = load_audio(p, cfg.sample_rate)
        except AudioError:
            bad.append(str(p))
            continue
        for start in range(0, max(len(wave) - cfg.hop_length, 1), seg_len):
            seg = wave[start:start + seg_len]
            if len(seg) < 4 * cfg.hop_length:
                continue
            audio.append(mu_law_encode(preemphasize(torch.from_numpy(seg), preemphasis)).to(torch.int16).numpy())
            mel.append(log_mel(torch.from_numpy(seg), cfg).numpy().astype(np.float16))
            sources.append(str(p))
        if progress is not None:
            progress.update(1)
    if bad:
        import warnings

        warnings.warn(f"skipped {len(bad)} unreadable audio files, e.g. {bad[:3]}")
    return Segments(audio, mel, sources)


def load_or_build_segments(files: list[Path], cfg: FeatureConfig, segment_seconds: float, cache: Path,
                           progress_factory=None, preemphasis: float = 0.0) -> Segments:
    """Segments of ``files``, cached in ``cache`` (an .npz keyed by the file list, feature config and
    pre-emphasis)."""
    keyed = [[str(f) for f in files], cfg.to_dict(), segment_seconds] + ([preemphasis] if preemphasis else [])
    key = hashlib.sha1(json.dumps(keyed).encode()).hexdigest()[:16]
    path = cache.with_name(f"{cache.stem}-{key}.npz")
    if path.exists():
        z = np.load(path, allow_pickle=False)
        lengths, frames = z["lengths"], z["frames"]
        audio = np.split(z["audio"], np.cumsum(lengths)[:-1])
        mel_cat = z["mel"]
        mel = np.split(mel_cat, np.cumsum(frames)[:-1], axis=1)
        return Segments(audio, mel, list(z["sources"]))
    bar = progress_factory(len(files)) if progress_factory else None
    seg = build_segments(files, cfg, segment_seconds, bar, preemphasis)
    if bar is not None:
        bar.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, audio=np.concatenate(seg.audio), lengths=np.array([len(a) for a in seg.audio]),
             mel=np.concatenate(seg.mel, axis=1), frames=np.array([m.shape[1] for m in seg.mel]),
             sources=np.array(seg.sources))
    tmp.rename(path)
    return seg


class WindowSampler:
    """Random frame-aligned windows: (inputs, targets, mel, frame_offset) batches, deterministic per step.

    The mel slice starts ``ctx`` frames before the window so the conditioning net sees the same context as
    at inference on the whole clip.
    """

    def __init__(self, seg: Segments, cfg: WaveNetConfig, window: int, silent_keep: float, seed: int):
        if window % cfg.hop_length:
            raise ValueError(f"window ({window}) must be a multiple of hop_length ({cfg.hop_length})")
        self.seg, self.cfg, self.window, self.silent_keep, self.seed = seg, cfg, window, silent_keep, seed
        # frames each side that the conditioning net's convolutions see, so windows get real context
        self.ctx = 2 * (cfg.cond_kernel // 2)
        self.n_frames = frames_needed(window, cfg.hop_length) + 2 * self.ctx
        self.usable = [i for i, a in enumerate(seg.audio) if len(a) >= window + cfg.hop_length]
        if not self.usable:
            raise ValueError(f"no segment is longer than the window ({window} samples)")

    def batch(self, step: int, batch: int):
        rng = np.random.default_rng([self.seed, step])
        hop, W, mid = self.cfg.hop_length, self.window, self.cfg.n_classes // 2
        ins, tgts, mels = [], [], []
        while len(ins) < batch:
            i = self.usable[rng.integers(len(self.usable))]
            a, m = self.seg.audio[i], self.seg.mel[i]
            max_frame = min((len(a) - W) // hop, m.shape[1] - self.n_frames + self.ctx)
            if max_frame < self.ctx:
                continue
            f0 = int(rng.integers(self.ctx, max_frame + 1))
            s = f0 * hop
            tgt = a[s:s + W].astype(np.int64)
            if np.abs(tgt - mid).mean() < 2.0 and rng.random() > self.silent_keep:
                continue   # mostly silence: keep only a few such windows
            prev = a[s - 1] if s > 0 else mid
            ins.append(np.concatenate([[prev], tgt[:-1]]))
            tgts.append(tgt)
            mels.append(m[:, f0 - self.ctx:f0 - self.ctx + self.n_frames])
        return (torch.from_numpy(np.stack(ins)), torch.from_numpy(np.stack(tgts)),
                torch.from_numpy(np.stack(mels).astype(np.float32)), self.ctx)


def lr_at(step: int, tc: VocoderTrainConfig) -> float:
    return max(tc.lr * 0.5 ** (step / tc.lr_half_life), tc.lr_min)


@torch.no_grad()
def validation_nll(model: WaveNet, batches: list) -> float:
    """Mean NLL in nats per sample, ignoring each window's first receptive field (no context there)."""
    rf = model.cfg.receptive_field
    total, count = 0.0, 0
    for inputs, targets, mel, offset in batches:
        logits = model(inputs, mel, offset)
        nll = F.cross_entropy(logits[:, :, rf:], targets[:, rf:], reduction="sum")
        total += float(nll)
        count += targets[:, rf:].numel()
    return total / max(count, 1)


# What a resumed run must keep: the draws, the optimisation and the data. The rest (steps to train to, how often to
# checkpoint, validate or measure, bf16) may change between sittings.
RESUME_KEYS = ("batch", "window", "lr", "lr_half_life", "lr_min", "ema_decay", "grad_clip", "max_word_clips",
               "segment_seconds", "silent_keep", "seed")


def check_resume(conf: dict, tc: VocoderTrainConfig, data_dirs, out: Path) -> None:
    """Refuse to resume the run of ``conf`` (its config.json) with other settings, naming the keys that differ."""
    was, now = conf.get("train", {}), tc.to_dict()
    diff = [f"{k}: {was[k]!r} -> {now[k]!r}" for k in RESUME_KEYS if k in was and was[k] != now[k]]
    if "data" in conf and [Path(d) for d in conf["data"]] != [Path(d) for d in data_dirs]:
        diff.append(f"data: {conf['data']} -> {[str(d) for d in data_dirs]}")
    if diff:
        raise ValueError(f"{out} holds a vocoder run with other settings ({'; '.join(diff)}): resume it with the same "
                         f"ones, or train in a new --out")


def train_vocoder(data_dirs: list[str | Path], out: str | Path, tc: VocoderTrainConfig = VocoderTrainConfig(),
                  model_cfg: WaveNetConfig = WaveNetConfig(), feature_cfg: FeatureConfig = FeatureConfig(),
                  progress: bool = True, max_steps_this_run: int | None = None, threads: int | None = None,
                  world: World | None = None, log_steps: int = 0) -> dict:
    """Train (or resume) a vocoder in ``out``. Returns the final state: step, validation NLL, paths.

    ``world``: under torchrun (default: :func:`speechmax.distributed.current`), each rank runs its slice of every
    batch (``tc.batch`` must divide among the ranks) and rank 0 alone writes. ``log_steps``: also log the whole
    batch's loss every this many steps (event "step"; 0: never)."""
    from tqdm.auto import tqdm

    world = distributed.current() if world is None else world
    if tc.batch % world.size:
        raise ValueError(f"batch {tc.batch} does not divide among {world.size} ranks: under torchrun every rank takes "
                         f"an equal slice of each batch (give a multiple of {world.size})")
    threads = world.threads(threads)
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    distributed.check_same_settings(world, {
        "command": "train vocoder", "out": str(out.resolve()), "data": [str(Path(d).resolve()) for d in data_dirs],
        "train": tc.to_dict(), "model": model_cfg.to_dict(), "features": feature_cfg.to_dict(),
        "max_steps_this_run": max_steps_this_run, "log_steps": log_steps})
    main = world.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
    log = JsonLog(out / "log.jsonl") if main else None
    files = vocoder_files(data_dirs)
    rng = np.random.default_rng(tc.seed)

    def pick(split, cap):
        words = [f for f in files[split] if "_nohash_" in f.name]
        other = [f for f in files[split] if "_nohash_" not in f.name]
        if len(words) > cap:
            words = [words[i] for i in sorted(rng.choice(len(words), cap, replace=False))]
        return words + other

    train_files, val_files = pick("training", tc.max_word_clips), pick("validation", 300)
    if not train_files:
        raise ValueError(f"no training audio found under {', '.join(map(str, data_dirs))}")
    stored = out / "config.json"
    if stored.exists() and (out / "last.json").exists():   # resuming: the run's own model config wins
        conf = json.loads(stored.read_text())
        check_resume(conf, tc, data_dirs, out)
        model_cfg, feature_cfg = WaveNetConfig.from_dict(conf["model"]), FeatureConfig.from_dict(conf["features"])
    bar = (lambda n: tqdm(total=n, desc="featurizing", unit="file", mininterval=5)) if progress and main else None

    def segments(split_files, name):   # rank 0 featurizes (and caches) first, the others read its cache
        def load():
            return load_or_build_segments(split_files, feature_cfg, tc.segment_seconds, out / "cache" / name, bar,
                                          model_cfg.preemphasis)
        got = distributed.main_first(world, load)
        return load() if got is None else got

    train = segments(train_files, "train")
    val = segments(val_files or train_files[:50], "val")
    torch.manual_seed(tc.seed)
    model = WaveNet(model_cfg, feature_cfg)
    ema = EMA(model, tc.ema_decay)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    state = load_checkpoint(out, model, opt, ema)   # every rank reads it: the same state everywhere
    step = int(state["step"]) if state else 0
    seconds = float(state.get("train_seconds", 0.0)) if state else 0.0
    if state is None and main:
        (out / "config.json").write_text(json.dumps({"model": model_cfg.to_dict(), "features": feature_cfg.to_dict(),
                                                     "train": tc.to_dict(), "data": [str(d) for d in data_dirs]}, indent=2))
        log.write(event="start", train_segments=len(train), val_segments=len(val), train_files=len(train_files),
                  **world.describe(), threads=torch.get_num_threads())
    sampler = WindowSampler(train, model_cfg, tc.window, tc.silent_keep, tc.seed)
    val_batches = [WindowSampler(val, model_cfg, tc.window, 1.0, 12345).batch(i, tc.batch) for i in range(4)] \
        if main else []
    end = tc.steps if max_steps_this_run is None else min(tc.steps, step + max_steps_this_run)
    pbar = tqdm(total=tc.steps, initial=step, desc="vocoder", unit="step", mininterval=30,
                disable=not (progress and main))
    last_loss = float(state.get("loss", "nan")) if state else float("nan")
    quality = _quality_probe(data_dirs, tc) if main else None
    net = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model)   # averages the ranks' gradients: equal slices, the batch's mean
    rows = slice(world.rank * tc.batch // world.size, (world.rank + 1) * tc.batch // world.size)
    model.train()
    with StepTimer(seconds) as clock:   # a pause (SIGSTOP ... SIGCONT) is not counted as training time
        while step < end:
            clock.start()
            inputs, targets, mel, offset = sampler.batch(step, tc.batch)   # the whole batch; this rank runs its rows
            inputs, targets, mel = inputs[rows], targets[rows], mel[rows]
            for g in opt.param_groups:
                g["lr"] = lr_at(step, tc)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tc.bf16):
                logits = net(inputs, mel, offset)
            loss = F.cross_entropy(logits.float(), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip))
            opt.step()
            ema.update(model, step)
            step += 1
            clock.stop()
            seconds = clock.seconds
            loss_value = float(distributed.all_reduce_sum(world, loss.detach().double() / world.size))
            last_loss = 0.98 * last_loss + 0.02 * loss_value if math.isfinite(last_loss) else loss_value
            pbar.update(1)
            pbar.set_postfix(loss=f"{last_loss:.3f}", lr=f"{lr_at(step, tc):.1e}")
            if not main:
                continue
            if log_steps and (step - 1) % log_steps == 0:
                log.write(event="step", step=step, loss=loss_value)
            if step % 50 == 0:
                log.write(event="train", step=step, loss=round(last_loss, 4), grad_norm=round(gnorm, 3),
                          lr=lr_at(step, tc), train_hours=round(seconds / 3600, 4))
            if step % tc.validate_every == 0 or step == end:
                nll = validation_nll(ema.model, val_batches)
                log.write(event="validate", step=step, val_nll=round(nll, 4), train_hours=round(seconds / 3600, 4))
            if tc.quality_every and step % tc.quality_every == 0 and quality is not None:
                snap = out / "snapshots" / f"step{step:07d}" if tc.snapshot_every and step % tc.snapshot_every == 0 else None
                q = quality(ema.model, snap)
                log.write(event="quality", step=step, train_hours=round(seconds / 3600, 4),
                          separate_accuracy=q["separate_accuracy"], stoi=q["stoi"], clips=q["clips"],
                          stoi_clips=q["stoi_clips"], hnr_db=q["hnr_db"], mcd_db=q["mcd_db"])
                model.train()
            if step % tc.checkpoint_every == 0 or step == end:
                save_checkpoint(out, model, opt, ema, {"step": step, "train_seconds": seconds, "loss": last_loss})
    pbar.close()
    distributed.barrier(world)   # rank 0's last checkpoint is written
    return {"step": step, "train_hours": seconds / 3600, "loss": last_loss, "checkpoint": str(out / "last.json")}


def _quality_probe(data_dirs, tc: VocoderTrainConfig):
    """A callable(model, snapshot_dir) measuring the curve's points on the first word corpus among
    ``data_dirs`` (its test split) with the shipped separate classifier; None when either is missing."""
    root = next((Path(d) for d in data_dirs if any((Path(d) / w).is_dir() for w in WORDS)), None)
    separate = load_model("classifier-separate", kind="classifier", missing_ok=True)
    if root is None or separate is None or not tc.quality_every:
        return None

    def probe(model, snapshot_dir):
        model.eval()
        return vocoder_quality(model, root, separate, per_class=tc.quality_per_class, examples_dir=snapshot_dir,
                               n_examples=3)

    return probe


def export_vocoder(run_dir: str | Path, dest: str | Path, extra_card: dict | None = None,
                   measure: dict | None = None) -> Path:
    """Write the EMA weights of ``run_dir/last`` as a shippable vocoder (safetensors + card).

    measure: {"root": corpus, "separate": classifier, "per_class": n} -> :func:`vocoder_quality` metrics in the
    card, with resynthesized examples in ``<dest>-examples/``.
    """
    run_dir = Path(run_dir)
    conf = json.loads((run_dir / "config.json").read_text())
    model = WaveNet(WaveNetConfig.from_dict(conf["model"]), FeatureConfig.from_dict(conf["features"]))
    ema = EMA(model)
    state = load_checkpoint(run_dir, model, None, ema)
    if state is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint to export")
    events = JsonLog(run_dir / "log.jsonl").read()
    val = [e for e in events if e.get("event") == "validate"]
    card = {"training": {"steps": state["step"], "train_hours": round(state["train_seconds"] / 3600, 2),
                         "config": conf["train"], "val_nll_curve": [(e["step"], e["train_hours"], e["val_nll"]) for e in val]},
            "training_data": conf["data"], "metrics": {"val_nll": val[-1]["val_nll"] if val else None}}
    card["training"]["quality_curve"] = [
        {"step": e["step"], "train_hours": e["train_hours"], "separate_accuracy": e["separate_accuracy"],
         "stoi": e["stoi"], "clips": e["clips"], "stoi_clips": e.get("stoi_clips"),
         **{k: e[k] for k in ("hnr_db", "mcd_db") if k in e}}
        for e in events if e.get("event") == "quality"]
    if any(q["stoi_clips"] is None for q in card["training"]["quality_curve"]):
        card["training"]["quality_curve_note"] = (
            "points without stoi_clips were measured before STOI skipped the clips it cannot score: their STOI "
            "averages all clips, counting those as 1e-5 (pystoi's value under 384 ms of speech)")
    card.update(extra_card or {})
    if measure is not None:
        dest_p = Path(dest)
        q = vocoder_quality(ema.model, measure["root"], measure["separate"], per_class=measure.get("per_class", 10),
                            examples_dir=dest_p.parent / f"{dest_p.name}-examples")
        card["metrics"].update(q)
        card["metrics_command"] = (f"speechmax train vocoder --data {measure['root']} --out {run_dir} --export {dest} "
                                   f"--measure --per-class {measure.get('per_class', 10)}")
    save_wavenet(ema.model, dest, **card)
    return Path(dest)
