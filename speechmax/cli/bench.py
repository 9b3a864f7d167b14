"""speechmax bench vocoder|maximize [--quick] [--json]: speed benchmarks (figures only as good as the machine is idle)."""
import json
import sys

from speechmax.cli.config import add_config_option
from speechmax.cli.values import POSITIVE_LIST, THREAD_LIST
from speechmax.maximize.bench import bench_maximize
from speechmax.vocoder.bench import bench_vocoder
from speechmax.vocoder.vocoder import Vocoder


def register(sub, help):
    p = sub.add_parser("bench", help=help,
                       description="Speed benchmarks of the vocoder samplers and of activation maximization (figures are\nonly as good as the machine is idle).",
                       epilog="example:\n  speechmax bench vocoder --quick --json")
    bsub = p.add_subparsers(dest="what", metavar="WHAT")
    bsub.required = True

    v = bsub.add_parser("vocoder", help="samples/s of every WaveNet sampling backend, the FMA peak and sgemm GFLOP/s",
                        description="Time every WaveNet sampling backend (samples/s per batch and thread count), the\nmachine's measured FMA peak and torch's sgemm GFLOP/s.",
                        epilog="example:\n  speechmax bench vocoder --quick --json > bench.json")
    v.add_argument("--quick", action="store_true", help="short runs: batches 1 and 64, threads 1 and 2, < 60 s")
    v.add_argument("--json", action="store_true", help="print the machine-readable form")
    v.add_argument("--model", default=None, help="vocoder to time (default: the default config, random weights)")
    v.add_argument("--backends", default="reference,cpu,cpu-bf16", help="comma-separated (default: %(default)s)")
    v.add_argument("--batches", type=POSITIVE_LIST, default="1,64", help="comma-separated batch sizes (default: %(default)s)")
    v.add_argument("--threads", type=THREAD_LIST, default="1,2", help="comma-separated thread counts (default: %(default)s)")
    add_config_option(v)
    v.set_defaults(func=run_vocoder)

    m = bsub.add_parser("maximize", help="steps/s of activation maximization: autograd vs the fused kernel",
                        description="Time activation maximization (one start advanced one ascent step = one step): autograd\nagainst the fused kernels, per mode, batch and thread count.",
                        epilog="example:\n  speechmax bench maximize --quick --paths autograd,fused --json")
    m.add_argument("--quick", action="store_true", help="short runs: batches 1 and 64, threads 1 and 2")
    m.add_argument("--json", action="store_true", help="print the machine-readable form")
    m.add_argument("--batches", type=POSITIVE_LIST, default=None, help="comma-separated batch sizes (default: 1,64,1024; quick 1,64)")
    m.add_argument("--threads", type=THREAD_LIST, default="1,2", help="comma-separated thread counts (default: %(default)s)")
    m.add_argument("--paths", default="autograd,fused,fused-bf16",
                   help="comma-separated of autograd, fused, fused-bf16 (the fused kernel in bf16 precision; "
                        "left out where the CPU has no bf16 dot products) (default: %(default)s)")
    m.add_argument("--modes", default="latent,features",
                   help="comma-separated of latent, features, latent-paper (through the paper's 2-D autoencoder) "
                        "(default: %(default)s)")
    m.add_argument("--paper-starts", type=int, default=0,
                   help="also time the paper's experiment (35 classes x 20 steps, latent, 2 threads) with this many "
                        "starts per class and extrapolate to 10,000 (10000 runs the whole experiment)")
    add_config_option(m)
    m.set_defaults(func=run_maximize)


def _print_peak(machine):
    print(f"{machine['cpu']}: peak GFLOP/s {machine['peak_gflops_by_threads']}  "
          f"torch GFLOP/s {machine['torch_gflops']}")


def run_vocoder(args):
    model = None
    if args.model:
        model = Vocoder.from_pretrained(args.model).model
    report = bench_vocoder(
        quick=args.quick, model=model, backends=tuple(args.backends.split(",")), batches=args.batches,
        threads=args.threads,
        progress=lambda r: print(f"  {r['backend']:<10} batch {r['batch']:>3}  threads {r['threads']}  "
                                 f"{r['samples_per_s']:>12,.0f} samples/s", file=sys.stderr))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"flops/sample {report['flops_per_sample']:,}  sgemm GFLOP/s {report['sgemm_gflops']}  "
          f"load {report['machine']['loadavg']}")
    _print_peak(report["machine"])
    for name, g in report["goals"].items():
        print(f"  {name:<42} {g['value']:>12,.3f}  goal {g['goal']:>8,}  {'met' if g['met'] else 'NOT met'}")
    return 0


def run_maximize(args):
    report = bench_maximize(
        quick=args.quick, batches=args.batches, threads=args.threads,
        paths=tuple(args.paths.split(",")), modes=tuple(args.modes.split(",")), paper_starts=args.paper_starts,
        progress=lambda r: print(f"  {r['path']:<10} {r['mode']:<8} batch {r['batch']:>4}  threads {r['threads']}  "
                                 f"{r['steps_per_s']:>10,.1f} steps/s", file=sys.stderr))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"flops/step {report['flops_per_step']}  load {report['machine']['loadavg']}")
    _print_peak(report["machine"])
    if "paper_scale" in report:
        print(f"paper scale: {report['paper_scale']}")
    for name, g in report["goals"].items():
        print(f"  {name:<42} {g['value']:>12,.2f}  goal {g['goal']:>8,}  {'met' if g['met'] else 'NOT met'}")
    return 0
