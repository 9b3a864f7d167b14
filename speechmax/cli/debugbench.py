"""speechmax debugbench [--quick] --out DIR [--json]: the debugging benchmark -- planted defects, a clean control,
the anomaly report and an attribution baseline scored side by side (debugbench.json, report.html)."""
import json
from pathlib import Path

from speechmax.cli.config import add_config_option
from speechmax.cli.values import SEED, THREADS
from speechmax.evaluate.debugbench import STARTS, BenchConfig, result_names, run_debugbench
from speechmax.maximize.engine import MODES
from speechmax.models.classifier import PRESETS
from speechmax.progress import progress_enabled


def register(sub, help):
    p = sub.add_parser("debugbench", help=help,
                       description="Plant one defect per word (a tone, background noise, swapped labels, an early word, a\n"
                                   "low-pass) in a corpus, train a clean control and one classifier per defect with the\n"
                                   "same recipe and seed, and score whether the anomaly report (and an integrated-gradients\n"
                                   "baseline) finds each defect among its word's top 3 anomalies with the right signature.",
                       epilog="examples:\n  speechmax debugbench --quick --out runs/bench-quick --json\n"
                              "  speechmax debugbench --out runs/bench --threads 2")
    p.add_argument("--out", required=True, help="output folder (debugbench.json, report.html, corpora/, models/): "
                                                "new, empty, or a previous run with the same settings (resumed)")
    p.add_argument("--quick", action="store_true",
                   help="tiny corpus and models, 8 words, 8 starts per word (minutes)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--data", default=None, help="an existing corpus to plant the defects in (default: build one "
                                                "under --out)")
    p.add_argument("--seed", type=SEED, default=0, help="picks the words, the models' and the ascent's draws")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="ascent on the log-mel features (the default: what the classifier keys on, a tone included) "
                        "or through the shipped prior's latent (natural speech only; --quick's default)")
    # not --start: under torchrun that abbreviates its --start-method (tests/test_distributed.py)
    p.add_argument("--climb-from", dest="start", choices=STARTS, default=None,
                   help="where each ascent begins: each word's validation clips with the corpus's background noise "
                        "mixed in, every model climbing from the same clips (the default), or noise")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="the classifier every model trains as (default: classifier; --quick: classifier-tiny)")
    p.add_argument("--augment-all-noise", action="store_true",
                   help="let the augmentation mix every background noise into training clips, the one the noise "
                        "defect plants included (by default that one is held out, so it is the defect word's alone)")
    p.add_argument("--no-augment", action="store_true",
                   help="train every model without augmentation (gain, shift, noise, masks), as the seed paper's "
                        "classifier was (default: the shipped classifier's recipe, with it; --quick: without)")
    p.add_argument("--threads", type=THREADS, default=None, help="torch threads (default: torch's)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out that holds something else")
    add_config_option(p)
    p.set_defaults(func=run)


def run(args):
    result = run_debugbench(args.out, quick=args.quick, data=args.data, seed=args.seed, mode=args.mode,
                            start=args.start, threads=args.threads, progress=progress_enabled(), overwrite=args.overwrite,
                            preset=args.preset, hold_out_noise=False if args.augment_all_noise else None,
                            augment=False if args.no_augment else None)
    if args.json:
        print(json.dumps({k: result[k] for k in ("defects", "control", "seconds")}, indent=2))
        return 0
    for d in result["defects"]:
        said = ("skipped" if d["detected"] is None else "found" if d["detected"] else "missed")
        print(f"{d['name']:8s} {d['class']:16s} {said:8s} rank {d['rank']}  effect {d['effect']}  "
              f"baseline {'found' if d['baseline_detected'] else 'missed'}")
    page = Path(args.out) / result_names(BenchConfig(**result["details"]["settings"]["config"]), args.quick)[1]
    print(f"control: {result['control']['false_alarms']} false alarm(s); {result['seconds']} s; {page}")
    return 0
