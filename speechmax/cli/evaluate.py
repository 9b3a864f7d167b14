"""speechmax evaluate: the evaluation report (not built yet)."""
from speechmax.cli import NotBuiltYet


def register(sub):
    p = sub.add_parser("evaluate", help="the evaluation report [not built yet]")
    p.set_defaults(func=run, accepts_extra=True)


def run(args):
    raise NotBuiltYet("the evaluation report has not landed in this version")
