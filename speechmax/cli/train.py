"""speechmax train {classifier,prior,vocoder} --data DIR --out DIR [...]: train a model, resumable."""
import json

from speechmax import distributed
from speechmax.cli import CommandError
from speechmax.cli.config import add_config_option, write_config
from speechmax.cli.values import LEARNING_RATE, POSITIVE, SEED, THREADS
from speechmax.models.registry import load_model
from speechmax.models.train import FitConfig, train_classifier, train_prior
from speechmax.models.wavenet import WaveNetConfig
from speechmax.progress import progress_enabled
from speechmax.vocoder.train import VocoderTrainConfig, export_vocoder, train_vocoder
from speechmax.weights import read_card


def register(sub, help):
    p = sub.add_parser("train", help=help,
                       description="Train a classifier, a latent prior or the WaveNet vocoder; a run resumes from OUT/last.",
                       epilog="example:\n  speechmax train classifier --data data/corpus --out runs/clf")
    tsub = p.add_subparsers(dest="what", metavar="WHAT")
    tsub.required = True

    v = tsub.add_parser("vocoder", help="WaveNet vocoder on words and continuous speech",
                        description="Train the WaveNet vocoder on words and continuous speech (checkpoint OUT/last, log\nOUT/log.jsonl), or export a run's EMA weights with --export.",
                        epilog="examples:\n  speechmax train vocoder --data data/corpus --data data/vocoder --out runs/voc --bf16\n  speechmax train vocoder --data data/corpus --out runs/voc --export my_vocoder --measure"
                               "\n  torchrun --standalone --nproc-per-node 2 -m speechmax train vocoder --data data/corpus --out runs/voc"
                               "\n    (data-parallel: the same steps as one process, rank 0 writes)")
    v.add_argument("--data", action="append", required=True, help="folder of 16 kHz speech (repeatable)")
    v.add_argument("--out", required=True, help="run folder: checkpoint OUT/last, log OUT/log.jsonl")
    v.add_argument("--steps", type=POSITIVE, default=200_000, help="total steps to train to")
    v.add_argument("--max-steps", type=POSITIVE, default=None,
                   help="stop this run after this many steps (default: run to --steps)")
    v.add_argument("--batch", type=POSITIVE, default=8,
                   help="windows per step (under torchrun: the whole batch, shared out among the ranks; a multiple of "
                        "their number)")
    v.add_argument("--window", type=int, default=4000, help="samples per window (multiple of 160)")
    v.add_argument("--lr", type=LEARNING_RATE, default=1e-3, help="Adam learning rate")
    v.add_argument("--bf16", action="store_true", help="bfloat16 autocast (fast where the CPU has AMX/AVX512-BF16)")
    v.add_argument("--threads", type=THREADS, default=None,
                   help="CPU threads (default: all; under torchrun, per rank: the cores shared among the ranks)")
    v.add_argument("--log-steps", type=int, default=0, metavar="N",
                   help="also log the whole batch's loss every N steps (OUT/log.jsonl, event \"step\"; default 0: "
                        "the smoothed loss every 50 steps only)")
    v.add_argument("--seed", type=SEED, default=0, help="seed of initialisation and window draws")
    v.add_argument("--preemphasis", type=float, default=0.0,
                   help="noise shaping: model x[t] - c*x[t-1], de-emphasise after sampling (new runs; default 0 = off)")
    v.add_argument("--export", metavar="PATH", help="instead of training, export OUT's EMA weights to PATH (default: train)")
    v.add_argument("--measure", action="store_true",
                   help="with --export: measure quality on the first --data corpus's test split (separate classifier "
                        "accuracy on original / WaveNet / Griffin-Lim audio, STOI) into the card")
    v.add_argument("--per-class", type=POSITIVE, default=10, help="test clips per word for --measure (default 10)")
    v.add_argument("--separate", default="classifier-separate", help="classifier used by --measure")
    add_config_option(v)
    v.set_defaults(func=run_vocoder)

    for what, presets in (("classifier", ("classifier", "classifier-separate", "classifier-paper")),
                          ("prior", ("prior", "prior-paper"))):
        q = tsub.add_parser(what, help=f"{what} on a v0.02-layout corpus (best epoch kept, card on the test split)",
                            description=f"Train a {what} on a v0.02-layout corpus; the best epoch on the validation split is\nkept, with a card measured on the test split.",
                            epilog=f"examples:\n  speechmax train {what} --data data/corpus --out runs/{what} --preset {presets[0]} --epochs 20"
                                   f"\n  torchrun --standalone --nproc-per-node 2 -m speechmax train {what} --data data/corpus "
                                   f"--out runs/{what}\n    (data-parallel: the same steps as one process, rank 0 writes)")
        q.add_argument("--data", required=True, help="corpus root (v0.02 layout)")
        q.add_argument("--out", required=True, help="run folder: OUT/model.safetensors + card, OUT/last to resume "
                                                    "(new, empty, or a run with the same settings; --epochs may grow)")
        q.add_argument("--overwrite", action="store_true",
                       help="start afresh in a non-empty --out that holds something else (its run files are replaced)")
        q.add_argument("--preset", choices=presets, default=presets[0], help="which shipped model's recipe to train")
        q.add_argument("--epochs", type=POSITIVE, default=20, help="epochs to train to (may grow on a resumed run)")
        q.add_argument("--batch", type=POSITIVE, default=128,
                       help="clips per batch (under torchrun: the whole batch, shared out among the ranks; a multiple "
                            "of their number)")
        q.add_argument("--lr", type=LEARNING_RATE, default=None,
                       help="AdamW learning rate (default: 2e-3 classifier, 1e-3 prior)")
        q.add_argument("--seed", type=SEED, default=0, help="seed of initialisation, batches and augmentation")
        q.add_argument("--bf16", action="store_true", help="bfloat16 autocast (fast where the CPU has AMX)")
        q.add_argument("--no-augment", action="store_true", help="train the classifier without augmentation")
        q.add_argument("--threads", type=THREADS, default=None,
                       help="CPU threads (default: all; under torchrun, per rank: the cores shared among the ranks)")
        q.add_argument("--log-steps", type=int, default=0, metavar="N",
                       help="also log the whole batch's loss every N steps (OUT/log.jsonl, event \"step\"; default 0: "
                            "per epoch only)")
        if what == "classifier":
            q.add_argument("--words", default=None,
                           help="the vocabulary, comma-separated in label order (each a folder of --data; _unknown_ and "
                                "_silence_ collect the other words and background noise) (default: the 35 words)")
        if what == "prior":
            q.add_argument("--classifier", default="classifier",
                           help="classifier (shipped name or path) used to measure the prior (default: classifier)")
        add_config_option(q)
        q.set_defaults(func=run_model)


def _check_steps_and_batch(args, world) -> None:
    if args.log_steps < 0:
        raise CommandError(f"--log-steps must be 0 or more, got {args.log_steps}")
    if args.batch % world.size:
        raise CommandError(f"--batch {args.batch} does not divide among the {world.size} ranks: each takes an equal "
                           f"slice of every batch, so give a multiple of {world.size}")


def run_model(args):
    lr = args.lr if args.lr is not None else (2e-3 if args.what == "classifier" else 1e-3)
    fc = FitConfig(epochs=args.epochs, batch=args.batch, lr=lr, seed=args.seed, bf16=args.bf16,
                   augment=not args.no_augment and args.what == "classifier")
    world = distributed.current()   # under torchrun: data-parallel, rank 0 writes and reports
    _check_steps_and_batch(args, world)
    if args.what == "classifier":
        words = None if args.words is None else [w for w in args.words.split(",")]
        metrics = train_classifier(args.data, args.out, args.preset, fc=fc, threads=args.threads,
                                   overwrite=args.overwrite, words=words, world=world,
                                   log_steps=args.log_steps)
        if not world.is_main:
            return 0
        write_config(args, args.out)   # after training: train_classifier is what accepts --out
        print(f"{args.preset}: test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_clips']} clips; "
              f"wrote {args.out}/model.safetensors, {args.out}/confusion.png")
        return 0

    clf = load_model(args.classifier, "classifier", missing_ok=True)
    metrics = train_prior(args.data, args.out, args.preset, fc=fc, classifier=clf, threads=args.threads,
                          overwrite=args.overwrite, world=world, log_steps=args.log_steps)
    if not world.is_main:
        return 0
    write_config(args, args.out)
    shown = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    print(f"{args.preset}: {json.dumps(shown)}; wrote {args.out}/model.safetensors")
    return 0


def run_vocoder(args):
    world = distributed.current()   # under torchrun: data-parallel training, rank 0 writes and reports
    if args.export:
        if not world.is_main:   # one file to write: rank 0 exports, the others have nothing to do
            return 0
        measure = None
        if args.measure:
            measure = {"root": args.data[0], "separate": load_model(args.separate, kind="classifier"),
                       "per_class": args.per_class}
        path = export_vocoder(args.out, args.export, measure=measure)
        print(f"exported {args.out} -> {path}.safetensors (+ card)")
        if measure:
            print(json.dumps(read_card(path)["metrics"], indent=2))
        return 0
    if args.window % 160:
        raise CommandError(f"--window must be a multiple of 160 samples, got {args.window}")
    _check_steps_and_batch(args, world)
    tc = VocoderTrainConfig(batch=args.batch, window=args.window, steps=args.steps, lr=args.lr, bf16=args.bf16, seed=args.seed)
    result = train_vocoder(args.data, args.out, tc, model_cfg=WaveNetConfig(preemphasis=args.preemphasis),
                           max_steps_this_run=args.max_steps, threads=args.threads, progress=progress_enabled(),
                           world=world, log_steps=args.log_steps)
    if not world.is_main:
        return 0
    write_config(args, args.out)
    print(f"vocoder: step {result['step']}, {result['train_hours']:.2f} h trained, loss {result['loss']:.3f}; "
          f"checkpoint {result['checkpoint']}")
    return 0
