"""speechmax corpus: build or inspect the offline Speech Commands corpus (not built yet)."""
from speechmax.cli import NotBuiltYet


def register(sub):
    p = sub.add_parser("corpus", help="build or inspect the offline Speech Commands corpus [not built yet]")
    p.set_defaults(func=run, accepts_extra=True)


def run(args):
    raise NotBuiltYet("the corpus builder (issue: offline corpus) has not landed in this version")
