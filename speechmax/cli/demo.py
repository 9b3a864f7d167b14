"""speechmax demo --out DIR: the main job on the shipped defaults (what `make demo` runs)."""


def register(sub):
    p = sub.add_parser("demo", help="run the main job on the shipped defaults and write its outputs")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.set_defaults(func=run)


def run(args):
    from speechmax.demo import run_demo

    summary = run_demo(args.out)
    print(f"demo: spoke {summary['word']!r} ({summary['seconds']:.2f} s), log-mel {summary['log_mel_shape']}")
    print("backends: " + ", ".join(k for k, v in summary["backends"].items() if v))
    print("wrote:")
    for f in summary["files"]:
        print(f"  {f}")
    return 0
