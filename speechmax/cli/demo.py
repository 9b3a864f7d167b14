"""speechmax demo --out DIR: the main job on the shipped defaults (what `make demo` runs): a quick evaluation
report and a few maximized, vocoded samples per class."""
from speechmax.cli import CommandError
from speechmax.cli.values import THREADS
from speechmax.demo import run_demo


def register(sub, help):
    p = sub.add_parser("demo", help=help,
                       description="The main job on the shipped defaults (what `make demo` runs): a quick evaluation report\nand a few maximized, vocoded samples per word.",
                       epilog="example:\n  speechmax demo --out demo_out --per-class 2")
    p.add_argument("--out", default="demo_out", help="output folder: new, empty, or a previous demo with the same "
                                                     "settings, which this one resumes (default: demo_out)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out that holds something else")
    p.add_argument("--per-class", type=int, default=2, help="maximized samples per word in OUT/samples (default 2)")
    p.add_argument("--threads", type=THREADS, default=None, help="CPU threads (default: all)")
    p.set_defaults(func=run)


def run(args):
    if args.per_class < 1:
        raise CommandError(f"--per-class must be >= 1, got {args.per_class}")
    s = run_demo(args.out, samples_per_class=args.per_class, threads=args.threads, overwrite=args.overwrite)
    print("debugging summary (quick evaluation of the shipped classifier):")
    for line in s["summary"]:
        print("  - " + line)
    hr = s["hit_rate"]
    print(f"samples: {s['n_samples']} maximized (latent mode) and vocoded by {s['vocoder']} in {s['samples']} "
          f"(target hit rate: classifier {100 * hr['classifier']:.0f}%, separate {100 * hr['separate']:.0f}%)")
    print(f"listening set: {s['listening_set']}  (serve: speechmax listen --set {s['listening_set']} --db answers.db)")
    print(f"report: {s['report']}  ({s['seconds']:.0f} s)")
    return 0
