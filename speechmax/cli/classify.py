"""speechmax classify: what a classifier says about wavs or log-mels (not built yet)."""
from speechmax.cli import NotBuiltYet


def register(sub):
    p = sub.add_parser("classify", help="what a classifier says about wavs or log-mels [not built yet]")
    p.set_defaults(func=run, accepts_extra=True)


def run(args):
    raise NotBuiltYet("classifiers (issue: classifiers and prior) has not landed in this version")
