"""speechmax synthesize: log-mel or wav -> audio with a vocoder (not built yet)."""
from speechmax.cli import NotBuiltYet


def register(sub):
    p = sub.add_parser("synthesize", help="log-mel or wav -> audio with a vocoder [not built yet]")
    p.set_defaults(func=run, accepts_extra=True)


def run(args):
    raise NotBuiltYet("the vocoder (issues: vocoder, fused kernels) has not landed in this version")
