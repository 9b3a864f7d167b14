"""speechmax listen: self-hosted listening test (not built yet)."""
from speechmax.cli import NotBuiltYet


def register(sub):
    p = sub.add_parser("listen", help="self-hosted listening test [not built yet]")
    p.set_defaults(func=run, accepts_extra=True)


def run(args):
    raise NotBuiltYet("the listening-test app has not landed in this version")
