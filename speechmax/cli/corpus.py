"""speechmax corpus {build,build-vocoder,stats}: the offline Speech Commands corpus and vocoder speech."""
import contextlib
import json
import sys
import warnings

from speechmax.cli import CommandError
from speechmax.cli.values import SEED
from speechmax.data import build_corpus, build_vocoder_corpus, corpus_stats


def register(sub, help):
    p = sub.add_parser("corpus", help=help,
                       description="Build the offline Speech Commands-style corpus with local TTS engines, speech for\nvocoder training, or count what a v0.02-layout folder holds.",
                       epilog="example:\n  speechmax corpus build --out data/corpus --speakers 30")
    csub = p.add_subparsers(dest="corpus_command", metavar="{build,build-vocoder,stats}")
    csub.required = True

    b = csub.add_parser("build", help="synthesise the 35 words by N pseudo-speakers (v0.02 layout)",
                        description="Synthesise the 35 Speech Commands words by N pseudo-speakers into the v0.02 layout\n(word folders, validation_list.txt, testing_list.txt); an interrupted build resumes.",
                        epilog="example:\n  speechmax corpus build --out data/corpus --speakers 30 --seed 0 --workers 2")
    b.add_argument("--out", required=True, help="output folder (new, empty, or a corpus to resume)")
    b.add_argument("--speakers", required=True, type=int, help="number of pseudo-speakers (35 clips each)")
    b.add_argument("--seed", type=SEED, default=0, help="seed of speakers, voices and noise")
    b.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    b.add_argument("--engines", nargs="+", default=None, metavar="ENGINE",
                   help="restrict to these TTS engines: espeak-ng flite festival mbrola pico2wave (default: every "
                        "installed one)")
    b.add_argument("--noise-dir", default=None, help="folder of noise recordings to add to _background_noise_ "
                                                     "(default: synthetic noise only)")
    b.add_argument("--repeats", type=int, default=1, help="takes per speaker and word (<id>_nohash_<k>)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    b.set_defaults(func=run_build)

    v = csub.add_parser("build-vocoder", help="continuous speech for vocoder training",
                        description="Synthesise continuous sentences by many pseudo-speakers for training the WaveNet vocoder.",
                        epilog="example:\n  speechmax corpus build-vocoder --out data/vocoder --minutes 60")
    v.add_argument("--out", required=True, help="output folder (new, empty, or a corpus to resume)")
    v.add_argument("--minutes", required=True, type=float, help="total duration to synthesise")
    v.add_argument("--seed", type=SEED, default=0, help="seed of speakers, voices and sentences")
    v.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    v.add_argument("--engines", nargs="+", default=None, metavar="ENGINE",
                   help="restrict to these TTS engines (default: every installed one)")
    v.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    v.set_defaults(func=run_build_vocoder)

    s = csub.add_parser("stats", help="counts per word and split of a v0.02-layout folder (real or built)",
                        description="Clips per word and split, speakers, clip lengths and background noise of a\nv0.02-layout folder (the real Speech Commands or one built by corpus build).",
                        epilog="example:\n  speechmax corpus stats data/corpus --json")
    s.add_argument("root", help="corpus root (word folders, validation_list.txt, testing_list.txt)")
    s.add_argument("--json", action="store_true", help="print the machine-readable form")
    s.set_defaults(func=run_stats)


@contextlib.contextmanager
def _warnings_as_lines():
    """Library warnings as one 'warning: ...' line each on stderr (without python's source line)."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda msg, cat, *a, **k: print(f"warning: {msg}", file=sys.stderr)
        yield


def _positive(name, value):
    if value is not None and value < 1:
        raise CommandError(f"{name} must be a positive integer, got {value}")


def run_build(args):
    _positive("--speakers", args.speakers)
    _positive("--workers", args.workers)
    _positive("--repeats", args.repeats)
    with _warnings_as_lines():
        s = build_corpus(args.out, args.speakers, seed=args.seed, workers=args.workers, engines=args.engines,
                         noise_dir=args.noise_dir, repeats=args.repeats, progress=not args.no_progress)
    print(f"{s.out}: {s.clips} clips by {s.speakers} speakers "
          f"(training {s.splits['training']}, validation {s.splits['validation']}, testing {s.splits['testing']}); "
          f"made {s.made} in {s.seconds:.1f} s ({s.clips_per_s:.1f} clips/s)"
          + (f"; {len(s.failed)} failed" if s.failed else ""))
    return 0


def run_build_vocoder(args):
    if not args.minutes > 0:
        raise CommandError(f"--minutes must be positive, got {args.minutes}")
    _positive("--workers", args.workers)
    with _warnings_as_lines():
        s = build_vocoder_corpus(args.out, args.minutes, seed=args.seed, workers=args.workers,
                                 engines=args.engines, progress=not args.no_progress)
    print(f"{s.out}: {s.clips} utterances by {s.speakers} speakers "
          f"(training {s.splits['training']}, validation {s.splits['validation']}, testing {s.splits['testing']}) "
          f"in {s.seconds:.1f} s")
    return 0


def run_stats(args):
    with _warnings_as_lines():
        st = corpus_stats(args.root)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"{st['root']}: {st['clips']} clips, {st['speakers']} speakers; "
          + ", ".join(f"{k} {v}" for k, v in st["splits"].items()))
    print("words: " + ", ".join(f"{w} {n}" for w, n in st["words"].items()))
    if st["unknown_folders"]:
        print("folders that are not one of the 35 words: " + ", ".join(st["unknown_folders"]))
    if st["sample_seconds"]:
        d = st["sample_seconds"]
        print(f"clip length (sample): {d['min']:.2f}-{d['max']:.2f} s, mean {d['mean']:.2f} s")
    print(f"background noise files: {len(st['background_noise'])}")
    return 0
