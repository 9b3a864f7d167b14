"""speechmax train {classifier,prior,vocoder} --data DIR --out DIR [...]: train a model, resumable."""
from speechmax.cli import CommandError, NotBuiltYet


def register(sub):
    p = sub.add_parser("train", help="train a classifier, prior or vocoder (resumes from OUT/last)")
    tsub = p.add_subparsers(dest="what", metavar="WHAT")
    tsub.required = True

    v = tsub.add_parser("vocoder", help="WaveNet vocoder on words and continuous speech")
    v.add_argument("--data", action="append", required=True, help="folder of 16 kHz speech (repeatable)")
    v.add_argument("--out", required=True, help="run folder: checkpoint OUT/last, log OUT/log.jsonl")
    v.add_argument("--steps", type=int, default=200_000, help="total steps to train to")
    v.add_argument("--max-steps", type=int, default=None, help="stop this run after this many steps")
    v.add_argument("--batch", type=int, default=8)
    v.add_argument("--window", type=int, default=4000, help="samples per window (multiple of 160)")
    v.add_argument("--lr", type=float, default=1e-3)
    v.add_argument("--bf16", action="store_true", help="bfloat16 autocast (fast where the CPU has AMX/AVX512-BF16)")
    v.add_argument("--threads", type=int, default=None)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--export", metavar="PATH", help="instead of training, export OUT's EMA weights to PATH")
    v.set_defaults(func=run_vocoder)

    for what in ("classifier", "prior"):
        q = tsub.add_parser(what, help=f"{what} [not built yet]")
        q.set_defaults(func=run_not_built, accepts_extra=True)


def run_not_built(args):
    raise NotBuiltYet(f"training a {args.what} has not landed in this version")


def run_vocoder(args):
    from speechmax.vocoder.train import VocoderTrainConfig, export_vocoder, train_vocoder

    if args.export:
        path = export_vocoder(args.out, args.export)
        print(f"exported {args.out} -> {path}.safetensors (+ card)")
        return 0
    if args.window % 160:
        raise CommandError(f"--window must be a multiple of 160 samples, got {args.window}")
    tc = VocoderTrainConfig(batch=args.batch, window=args.window, steps=args.steps, lr=args.lr, bf16=args.bf16, seed=args.seed)
    result = train_vocoder(args.data, args.out, tc, max_steps_this_run=args.max_steps, threads=args.threads)
    print(f"vocoder: step {result['step']}, {result['train_hours']:.2f} h trained, loss {result['loss']:.3f}; "
          f"checkpoint {result['checkpoint']}")
    return 0
