"""speechmax bench: speed benchmarks (not built yet)."""
from speechmax.cli import NotBuiltYet


def register(sub):
    p = sub.add_parser("bench", help="speed benchmarks [not built yet]")
    p.set_defaults(func=run, accepts_extra=True)


def run(args):
    raise NotBuiltYet("the benchmark suites has not landed in this version")
