"""The ``speechmax`` command. Each subcommand lives in its own module with ``register(subparsers)``;
handlers only parse arguments and call the library."""
from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order `speechmax --help` lists them.
COMMANDS = ["info", "demo", "corpus", "train", "classify", "synthesize", "maximize", "evaluate", "listen", "bench"]


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from speechmax import __version__

    parser = argparse.ArgumentParser(prog="speechmax", description="Debug speech classifiers by generating speech.")
    parser.add_argument("--version", action="version", version=f"speechmax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"speechmax.cli.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except (CommandError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"speechmax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
