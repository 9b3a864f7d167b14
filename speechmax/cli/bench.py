"""speechmax bench vocoder|maximize [--quick] [--json]: speed benchmarks (figures only as good as the machine is idle)."""
import json
import sys

from speechmax.cli import NotBuiltYet


def register(sub):
    p = sub.add_parser("bench", help="speed benchmarks: vocoder (maximize: not built yet)")
    bsub = p.add_subparsers(dest="what", metavar="WHAT")
    bsub.required = True

    v = bsub.add_parser("vocoder", help="samples/s of every WaveNet sampling backend, and sgemm GFLOP/s")
    v.add_argument("--quick", action="store_true", help="short runs: batches 1 and 64, threads 1 and 2, < 60 s")
    v.add_argument("--json", action="store_true", help="print the machine-readable form")
    v.add_argument("--model", default=None, help="vocoder to time (default: the default config, random weights)")
    v.add_argument("--backends", default="reference,cpu,cpu-bf16", help="comma-separated (default: %(default)s)")
    v.add_argument("--batches", default="1,64", help="comma-separated batch sizes (default: %(default)s)")
    v.add_argument("--threads", default="1,2", help="comma-separated thread counts (default: %(default)s)")
    v.set_defaults(func=run_vocoder)

    m = bsub.add_parser("maximize", help="steps/s of activation maximization [not built yet]")
    m.set_defaults(func=run_maximize, accepts_extra=True)


def _ints(text):
    return tuple(int(x) for x in text.split(","))


def run_vocoder(args):
    from speechmax.vocoder.bench import bench_vocoder

    model = None
    if args.model:
        from speechmax.vocoder.vocoder import Vocoder

        model = Vocoder.from_pretrained(args.model).model
    report = bench_vocoder(
        quick=args.quick, model=model, backends=tuple(args.backends.split(",")), batches=_ints(args.batches),
        threads=_ints(args.threads),
        progress=lambda r: print(f"  {r['backend']:<10} batch {r['batch']:>3}  threads {r['threads']}  "
                                 f"{r['samples_per_s']:>12,.0f} samples/s", file=sys.stderr))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"flops/sample {report['flops_per_sample']:,}  sgemm GFLOP/s {report['sgemm_gflops']}  "
          f"load {report['machine']['loadavg']}")
    for name, g in report["goals"].items():
        print(f"  {name:<42} {g['value']:>12,.3f}  goal {g['goal']:>8,}  {'met' if g['met'] else 'NOT met'}")
    return 0


def run_maximize(args):
    raise NotBuiltYet("bench maximize lands with the fused maximization kernels")
