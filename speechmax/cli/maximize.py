"""speechmax maximize --target WORD|all --n N [--mode features|latent] [--init noise|PATH]
[--objective prob|logit|unit:LAYER:INDEX] [--recipe speechmax|paper] [--steps K] --out DIR [--json]:
activation maximization toward a class or a hidden unit, written as .npy, .wav, .png and manifest.json."""
import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from speechmax import distributed
from speechmax.cli import CommandError
from speechmax.cli.config import add_config_option, write_config
from speechmax.cli.options import add_model_options, add_separate_options, load_model_from_args
from speechmax.cli.values import SEED, THREADS
from speechmax.data.words import WORDS
from speechmax.maximize import L2, Clamp, Diversity, Jitter, TotalVariation, bf16_isa, maximize, parse_objective
from speechmax.maximize.engine import merge_results, resolve_targets
from speechmax.maximize.output import remove_samples, score_written_audio, write_manifest, write_sample_files
from speechmax.maximize.recipes import DEFAULT_RECIPE, RECIPES
from speechmax.models.external import ARCH
from speechmax.models.inference import load_clips
from speechmax.models.registry import load_model
from speechmax.outputs import prepare_output, write_json
from speechmax.progress import progress_bar
from speechmax.vocoder.vocoder import Vocoder

RUN_MARKER = "run.json"
# Arguments that change neither the samples nor their files: a run differing only in these resumes.
OUTPUT_NEUTRAL = {"command", "out", "overwrite", "json", "threads", "chunk", "accepts_extra", "config", "log_level",
                  "progress"}


def register(sub, help):
    p = sub.add_parser("maximize", help=help,
                       description="Activation maximization toward a word or a hidden unit, from noise or from clips;\nwrites .npy log-mels, .wav, .png and manifest.json to --out.",
                       epilog="examples:\n  speechmax maximize --target yes --starts 8 --mode latent --out runs/yes\n  speechmax maximize --objective unit:block2:5 --steps 100 --out runs/unit --json")
    p.add_argument("--target", default=None, help="a word, a comma-separated list of words, or 'all' "
                                                  "(required unless --objective is a unit; no default)")
    p.add_argument("--starts", "--n", dest="n", type=int, default=8,
                   help="starts per target (default 8; with --init PATH, the clips); --n is the short old name")
    p.add_argument("--mode", choices=["features", "latent"], default="features",
                   help="ascent on the log-mel features, or on the prior's latent (default features)")
    p.add_argument("--init", default="noise", help="noise, or a .wav / .npy log-mel / folder of clips to start from "
                                                   "(class-to-class: clips of word A climbed toward --target B)")
    p.add_argument("--objective", default=None, help="prob (default) | logit | LAYER:CHANNEL, a named module's channel "
                                                     "mean (e.g. block2:5, or body.conv:3 in your model; unit:LAYER:INDEX "
                                                     "is the older form)")
    p.add_argument("--recipe", choices=list(RECIPES), default=DEFAULT_RECIPE,
                   help="; ".join(f"{r.name}: {r.about}" for r in RECIPES.values()) +
                        f" (default {DEFAULT_RECIPE}); explicit flags such as --steps override it")
    p.add_argument("--preset", choices=["paper"], dest="recipe", help="older name of --recipe paper (default: unset)")
    p.add_argument("--steps", type=int, default=None, help="ascent steps (default: the recipe's, 60 speechmax / 20 paper)")
    p.add_argument("--lr", type=float, default=None, help="step size (default 0.01 features, 0.1 latent)")
    p.add_argument("--optimizer", choices=["rms-normalized", "adam"], default=None,
                   help="ascent optimizer (default: the recipe's)")
    p.add_argument("--l2", type=float, default=0.0, help="L2 penalty weight (latent, or normalised features)")
    p.add_argument("--tv", type=float, default=0.0, help="total-variation weight along time and frequency")
    p.add_argument("--jitter", type=int, default=0, help="random time shift of up to this many frames per step")
    p.add_argument("--diversity", type=float, default=0.0,
                   help="weight of a penalty on the similarity of one target's starts to each other (0 = off)")
    p.add_argument("--clamp", action="store_true", help="keep features inside the training data's range")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the starts (default 0)")
    add_model_options(p, what="the classifier to explain")
    add_separate_options(p)
    p.add_argument("--prior", default=None, help="prior for latent mode (default: the recipe's, prior / prior-paper)")
    p.add_argument("--vocoder", default="auto", help="auto (shipped WaveNet, else Griffin-Lim) | griffinlim | PATH")
    p.add_argument("--backend", "--path", dest="backend", choices=["auto", "autograd", "cpu", "triton"], default="auto",
                   help="ascent implementation: auto = fused kernels where they cover the models, else autograd "
                        "(--path is its older name)")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32",
                   help="the CPU kernel's products: fp32, bf16 (AMX or AVX512-BF16; an error on a CPU without "
                        "them), auto = bf16 where it runs, else fp32 (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=1024, help="starts per batch (bounds memory)")
    p.add_argument("--threads", type=THREADS, default=None, help="CPU threads (default: all)")
    p.add_argument("--out", required=True, help="output folder: new, empty, or a previous run of the same command "
                                                "(which this one resumes)")
    p.add_argument("--overwrite", action="store_true",
                   help="reuse a non-empty --out that holds something else (a previous run's listed files are removed)")
    p.add_argument("--json", action="store_true", help="print the machine-readable summary")
    add_config_option(p)
    p.set_defaults(func=run)


def run(args):
    objective = parse_objective(args.objective or "prob")
    if args.target is None and objective in ("prob", "logit"):
        raise CommandError("--target is required (a word, a comma-separated list, or all) unless --objective is a unit")
    if args.steps is not None and args.steps <= 0:
        raise CommandError(f"--steps must be >= 1, got {args.steps}")
    if args.n < 1:
        raise CommandError(f"--starts must be >= 1, got {args.n}")
    if args.precision == "bf16" and (args.backend not in ("auto", "cpu") or bf16_isa() is None):
        raise CommandError("--precision bf16 runs in the fused cpu kernel on a CPU with bf16 dot products (AMX-BF16 "
                           f"or AVX512-BF16); " + (f"--backend is {args.backend}" if args.backend not in ("auto", "cpu")
                                                   else "this CPU has none") + "; use --precision fp32")
    # What makes the files: a run with the same settings resumes in --out, another one is refused before compute.
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in OUTPUT_NEUTRAL and not callable(v)}
    if settings.get("precision") == "fp32":   # what runs did before the flag: their folders still resume
        del settings["precision"]
    world = distributed.current()   # under torchrun, target k of the list goes to rank k mod size
    distributed.check_same_settings(world, settings)

    def accept_out() -> bool:
        resume = prepare_output(args.out, RUN_MARKER, settings, what="speechmax maximize run",
                                overwrite=args.overwrite)
        write_config(args, args.out)
        if args.overwrite and not resume:
            remove_samples(args.out)
        write_json(Path(args.out) / RUN_MARKER, {"settings": settings, "complete": False})
        return resume

    resume = distributed.gather(world, distributed.main_first(world, accept_out))[0]
    threads = world.threads(args.threads)
    classifier = load_model_from_args(args)
    separate = load_model_from_args(args, "separate")
    prior = None
    if args.mode == "latent":
        prior = load_model(args.prior or RECIPES[args.recipe].prior, kind="prior")
    init, n = "noise", args.n
    if args.init != "noise":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, clips, _ = load_clips(args.init, classifier.feature_config, classifier.cfg.n_frames)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        if clips is None:
            raise CommandError(f"--init {args.init}: no usable clip")
        init = torch.from_numpy(clips)
        n = None
    regs = ([L2(args.l2)] if args.l2 else []) + ([TotalVariation(args.tv, args.tv)] if args.tv else []) + \
        ([Diversity(args.diversity)] if args.diversity else []) + \
        ([Jitter(args.jitter)] if args.jitter else []) + ([Clamp()] if args.clamp else [])
    targets = None if args.target is None else (args.target if args.target == "all" else args.target.split(","))
    try:
        targets = None if targets is None else resolve_targets(
            targets, tuple(classifier.cfg.labels) or WORDS[:classifier.cfg.n_classes])
    except ValueError as e:
        raise CommandError(str(e)) from None
    # this rank's pieces -- (target k, its starts a..b-1): under torchrun a target's noise starts come in blocks of
    # --chunk, so ranks share even one target's starts; a plain run has one piece per target -- and the places of
    # its samples in the whole run, which name their files and seed their audio (a unit objective has no target:
    # one "target")
    per = n if n is not None else len(init)
    size = args.chunk if world.distributed and n is not None else per
    pieces = [(k, a, min(per, a + size)) for k in range(1 if targets is None else len(targets))
              for a in range(0, per, size)]
    mine = [piece for i, piece in enumerate(pieces) if world.owns(i)]
    groups = {}   # the rank's targets by block: one maximize() per block
    for k, a, b in mine:
        groups.setdefault((a, b), []).append(k)
    rows = [k * per + j for (a, b), ks in groups.items() for k in ks for j in range(a, b)]
    voc = Vocoder.for_listeners(args.vocoder)
    t0 = time.time()
    res, entries = None, []
    if mine:
        parts, done = [], 0
        with progress_bar(unit="step", unit_scale=True, desc="maximize") as bar:
            for (a, b), ks in groups.items():
                part = maximize(classifier, None if targets is None else [targets[k] for k in ks], mode=args.mode,
                                prior=prior, init=init, n=None if n is None else b - a, steps=args.steps, lr=args.lr,
                                optimizer=args.optimizer, objective=objective, regularizers=regs or None,
                                seed=args.seed, recipe=args.recipe, separate=separate, chunk=args.chunk,
                                backend=args.backend, threads=threads, progress=bar.update, first_start=a,
                                precision=args.precision)
                parts.append((part, range(done, done + len(part.targets))))
                done += len(part.targets)
        res = parts[0][0] if len(parts) == 1 else merge_results(parts)
        with progress_bar(total=len(res.targets), unit="sample", desc="write") as bar:
            entries = write_sample_files(res, args.out, vocoder=voc, seed=args.seed, progress=bar.update,
                                         resume=resume, index=rows)
    if world.distributed:   # rank 0 makes one result of every rank's share (without the features: on disk now)
        light = None if res is None else replace(res, features=None, features_before=None, latents=None,
                                                 latents_before=None)
        every = distributed.gather(world, (light, rows, entries))
        if not world.is_main:
            return 0
        res = merge_results([(r, rw) for r, rw, _ in every if r is not None])
        entries = [e for _, _, es in every for e in es]
    manifest = write_manifest(res, args.out, entries, voc)
    audio = score_written_audio(args.out, classifier, separate)
    write_json(Path(args.out) / RUN_MARKER, {"settings": settings, "complete": True})
    wav_skipped = json.loads(manifest.read_text())["wav_skipped"]
    # a user's model is judged on the audio a person hears; speechmax's own keep their feature-level figure
    # (the evaluation's vocoder control measures the difference)
    user = classifier.cfg.arch == ARCH
    hit_rate = {k: audio[k] for k in ("classifier", "separate")} if user else \
        {"classifier": res.hit_rate("classifier"), "separate": res.hit_rate("separate")}
    summary = {"n": res.settings["n"], "targets": [res.labels[t] for t in dict.fromkeys(res.targets.tolist()) if t >= 0],
               "hit_rate": hit_rate, "hit_rate_scored_on": "written audio" if user else "features",
               "hit_rate_audio": audio,
               **({"separate_shared_labels": res.shared_labels()} if res.separate_labels is not None else {}),
               "manifest": str(manifest), "samples": len(res.targets), "mode": res.settings["mode"],
               "backend": res.settings["backend"], "precision": res.settings.get("precision", "fp32"), "nan_stopped": res.nan_stopped, "wav_skipped": wav_skipped, "resumed": resume,
               "seconds": round(time.time() - t0, 2)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        hr = summary["hit_rate"]
        fmt = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        print(f"wrote {summary['samples']} sample(s) to {args.out} ({res.settings['mode']} mode, {res.settings['backend']} "
              f"backend, {summary['precision']}, {summary['seconds']} s); target hit rate: classifier {fmt(hr['classifier'])}, "
              f"separate {fmt(hr['separate'])}")
        if res.nan_stopped:
            print(f"stopped (non-finite ascent): {len(res.nan_stopped)} start(s): {res.nan_stopped[:20]}")
        if wav_skipped:
            print(f"no audio (non-finite, marked in the manifest): {len(wav_skipped)} sample(s): {wav_skipped[:20]}")
        print(f"manifest: {manifest}")
    return 0
