"""speechmax train: train a classifier, prior or vocoder (not built yet)."""
from speechmax.cli import NotBuiltYet


def register(sub):
    p = sub.add_parser("train", help="train a classifier, prior or vocoder [not built yet]")
    p.set_defaults(func=run, accepts_extra=True)


def run(args):
    raise NotBuiltYet("training (issues: classifiers/prior, vocoder) has not landed in this version")
