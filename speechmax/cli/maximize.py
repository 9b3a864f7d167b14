"""speechmax maximize: activation maximization toward a class or a hidden unit (not built yet)."""
from speechmax.cli import NotBuiltYet


def register(sub):
    p = sub.add_parser("maximize", help="activation maximization toward a class or a hidden unit [not built yet]")
    p.set_defaults(func=run, accepts_extra=True)


def run(args):
    raise NotBuiltYet("the maximization engine has not landed in this version")
