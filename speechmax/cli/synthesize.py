"""speechmax synthesize INPUT --out DIR [--backend ...]: log-mel (.npy) or wav -> audio with the vocoder."""
import sys
from pathlib import Path

import numpy as np

from speechmax import distributed
from speechmax.cli import CommandError
from speechmax.cli.values import SEED, TEMPERATURE, THREADS
from speechmax.features import save_audio
from speechmax.ops.wavenet import resolve_backend
from speechmax.outputs import prepare_output, write_json
from speechmax.progress import progress_bar
from speechmax.vocoder.synthesis import load_inputs
from speechmax.vocoder.vocoder import Vocoder

RUN_MARKER = "run.json"

BACKENDS = ["auto", "reference", "cpu", "cpu-bf16", "triton", "cuda", "griffinlim"]


def register(sub, help):
    p = sub.add_parser("synthesize", help=help,
                       description="Turn log-mels (.npy) into audio with the WaveNet vocoder (or Griffin-Lim); a .wav is\nresynthesised. A folder's layout is kept under --out.",
                       epilog="examples:\n  speechmax synthesize mel.npy --out wavs\n  speechmax synthesize runs/yes --out wavs --backend cpu --seed 0")
    p.add_argument("input", help="a .npy log-mel (80, T) or (B, 80, T), a .wav (resynthesis), or a folder of either")
    p.add_argument("--out", required=True, help="folder for the wavs (a folder's layout is kept): new, empty, or a "
                                                "previous run of the same command (which this one resumes)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out that holds something else")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="sampler: auto = the fastest that runs here; griffinlim = the control without the WaveNet")
    p.add_argument("--model", default="default", help="vocoder: 'default' (shipped) or a path to .safetensors + card")
    p.add_argument("--temperature", type=TEMPERATURE, default=1.0, help="softmax temperature of the draws (0 = argmax)")
    p.add_argument("--seed", type=SEED, default=None, help="seed of the uniforms (default: random)")
    p.add_argument("--threads", type=THREADS, default=None, help="CPU threads (default: all)")
    p.set_defaults(func=run)


def run(args):
    if args.backend not in ("auto", "griffinlim"):
        resolve_backend(args.backend)   # a backend that cannot run here is named before anything is written
    out = Path(args.out)
    settings = {"input": str(Path(args.input).resolve()), "backend": args.backend, "model": args.model,
                "temperature": args.temperature, "seed": args.seed}
    world = distributed.current()   # under torchrun, each rank synthesizes its share of the files
    distributed.check_same_settings(world, {**settings, "overwrite": args.overwrite})
    resume = distributed.gather(world, distributed.main_first(world, lambda: prepare_output(
        out, RUN_MARKER, settings, what="speechmax synthesize run", overwrite=args.overwrite)))[0]
    threads = world.threads(args.threads)
    if args.backend == "griffinlim" and args.model == "default":
        voc = Vocoder(None, name="griffinlim")
    else:
        voc = Vocoder.from_pretrained(args.model)
    jobs, skipped = load_inputs(args.input, voc.feature_config)
    if skipped:
        print(f"warning: skipped {len(skipped)} unusable file(s): " + "; ".join(skipped), file=sys.stderr)
    if not jobs:
        raise CommandError(f"{args.input}: nothing to synthesize")
    jobs = world.shard(jobs)   # file i to rank i mod size: a file's audio depends on it and the seed only
    if resume:   # every file there is whole (written atomically): synthesize only what is missing
        jobs = [job for job in (job.without([n for n in job.names if (out / f"{n}.wav").is_file()]) for job in jobs)
                if job.names]
    if world.is_main:
        write_json(out / RUN_MARKER, {"settings": settings, "complete": False})
    hop = voc.feature_config.hop_length
    total = sum(len(job.names) * (job.mel.shape[-1] - 1) * hop for job in jobs)
    written, bad = [], []
    with progress_bar(total=total, unit="sample", unit_scale=True, desc=f"synthesize ({args.backend})") as bar:
        for job in jobs:
            n_items = len(job.names)
            waves = voc.synthesize(job.mel, backend=args.backend, temperature=args.temperature, seed=args.seed,
                                   threads=threads, progress=lambda k: bar.update(k * n_items))
            for name, wave in zip(job.names, waves):
                if not np.isfinite(wave).all():
                    bad.append(name)
                    continue
                path = out / f"{name}.wav"
                save_audio(path, wave, voc.sample_rate)
                written.append(path)
    every = distributed.gather(world, (written, bad))   # rank 0 writes the marker and reports for all
    if not world.is_main:
        return 0
    written, bad = sorted(p for w, _ in every for p in w), sorted(n for _, b in every for n in b)
    write_json(out / RUN_MARKER, {"settings": settings, "complete": True, "non_finite": bad})
    if bad:
        print(f"warning: no wav for {len(bad)} item(s) whose audio came out non-finite: " + ", ".join(bad),
              file=sys.stderr)
    if not written and bad:
        raise CommandError(f"{args.input}: no item gave finite audio")
    print(f"wrote {len(written)} wav(s) to {out} ({voc.name}, backend {args.backend}"
          + (f", {world.size} ranks" if world.distributed else "") + "):")
    for path in written:
        print(f"  {path}")
    return 0
