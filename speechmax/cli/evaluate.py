"""speechmax evaluate --out DIR [--per-class N] [--quick] [--data DIR]: the evaluation report
(report.html, metrics.json, figures/, listening/)."""
import json

from speechmax.cli import CommandError
from speechmax.cli.config import add_config_option, write_config
from speechmax.cli.options import add_model_options, add_separate_options, model_spec
from speechmax.cli.values import SEED, THREADS
from speechmax.evaluate import evaluate
from speechmax.maximize.recipes import DEFAULT_RECIPE, RECIPES
from speechmax.progress import progress_bar


def register(sub, help):
    p = sub.add_parser("evaluate", help=help,
                       description="The evaluation report: noise -> class success of every recipe and mode, the vocoder\ncontrol, class to class, figures and a listening set (report.html, metrics.json).",
                       epilog="examples:\n  speechmax evaluate --out runs/eval --quick\n  speechmax evaluate --out runs/full --per-class 10000 --threads 2")
    p.add_argument("--out", required=True, help="output folder (report.html, metrics.json, figures/, listening/): new, "
                                                "empty, or a previous evaluation with the same settings (resumed)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out that holds something else")
    p.add_argument("--per-class", type=int, default=None,
                   help="noise starts per class for each recipe and mode (default 10,000 as in the paper; --quick 20)")
    p.add_argument("--quick", action="store_true", help="a small run (20 starts per class, 8 fresh speakers; minutes)")
    p.add_argument("--data", default=None, help="corpus whose testing split is used (default: build a fresh corpus "
                                                "of unseen speakers under --out)")
    p.add_argument("--speakers", type=int, default=None, help="speakers of the fresh corpus (default 30; quick 8)")
    add_model_options(p, what="the classifier to explain")
    add_separate_options(p, none_ok=False)
    p.add_argument("--prior", default="prior", help="prior of speechmax's latent recipe")
    p.add_argument("--prior-paper", default="prior-paper", help="prior of the paper preset's latent mode")
    p.add_argument("--vocoder", default="auto", help="auto (shipped WaveNet, else Griffin-Lim) | griffinlim | PATH")
    p.add_argument("--listen-per-class", type=int, default=None, help="listening-set clips per word and condition "
                                                                      "(default 3; quick 1)")
    p.add_argument("--control-per-class", type=int, default=None, help="vocoder-control samples per word and group "
                                                                       "(default 10; quick 2)")
    p.add_argument("--c2c-per-class", type=int, default=None, help="real clips per word climbed toward every word "
                                                                   "(default 3; quick 1)")
    p.add_argument("--recipe", choices=list(RECIPES), default=DEFAULT_RECIPE,
                   help="recipe of class to class, the vocoder control and the listening set (noise -> class always "
                        f"compares every recipe; default {DEFAULT_RECIPE})")
    p.add_argument("--preset", choices=["paper"], dest="recipe", help="older name of --recipe paper (default: unset)")
    p.add_argument("--steps", type=int, default=None, help="ascent steps of speechmax's recipe (default 60)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the starts, corpus and listening set")
    p.add_argument("--threads", type=THREADS, default=None, help="CPU threads (default: all)")
    p.add_argument("--json", action="store_true", help="print the headline metrics as JSON")
    add_config_option(p)
    p.set_defaults(func=run)


def run(args):
    for name in ("per_class", "steps", "speakers", "listen_per_class", "control_per_class", "c2c_per_class"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.separate == "none":
        raise CommandError("evaluate needs a separate classifier (its success counts both); --separate none is "
                           "for maximize")
    models = dict(classifier=model_spec(args), separate=model_spec(args, "separate"), prior=args.prior,
                  prior_paper=args.prior_paper, vocoder=args.vocoder)   # loaded once --out is accepted
    m = evaluate(args.out, per_class=args.per_class, quick=args.quick, data=args.data, models=models,
                 speakers=args.speakers, seed=args.seed, threads=args.threads,
                 listen_per_class=args.listen_per_class, control_per_class=args.control_per_class,
                 c2c_per_class=args.c2c_per_class, steps=args.steps, recipe=args.recipe, overwrite=args.overwrite,
                 progress=progress_bar)   # one overall bar with an ETA across targets (on a terminal or --progress)
    if m is None:   # a rank other than 0 under torchrun: its share is on disk; rank 0 writes and reports
        return 0
    write_config(args, args.out)   # only now: evaluate() is what accepts --out
    head = {"report": f"{args.out}/report.html", "metrics": f"{args.out}/metrics.json",
            "success": {k: v["overall"] for k, v in m["noise_to_class"].items()},
            "vocoder_control": {g: {k: (v.get(k) or {}).get("rate") for k in ("features", "wavenet", "griffinlim")}
                                for g, v in m["vocoder_control"]["groups"].items()},
            "class_to_class": {k: v["success_off_diagonal"] for k, v in m["class_to_class"].items()},
            "listening_set": m["listening_set"]["path"], "seconds": m["timing"]["total"]}
    if args.json:
        print(json.dumps(head, indent=2))
    else:
        for line in m["summary"]:
            print("- " + line)
        print(f"report: {head['report']}  ({head['seconds']:.0f} s)")
    return 0
