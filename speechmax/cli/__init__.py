"""The ``speechmax`` command. Each subcommand lives in its own module with ``register(subparsers)``;
handlers only parse arguments and call the library."""
from __future__ import annotations

import argparse
import importlib
import sys

from speechmax.cli.config import apply_config, fill_from_config

# Subcommand modules, in the order `speechmax --help` lists them.
COMMANDS = ["info", "demo", "corpus", "train", "classify", "synthesize", "maximize", "evaluate", "listen", "bench"]


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; an option's help ends with its default unless it already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or action.required or "default" in text.lower():
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return text + " (default: off)"
        if action.nargs != 0 and action.default not in (None, argparse.SUPPRESS):
            return text + " (default: %(default)s)"
        return text


def walk_parsers(parser: argparse.ArgumentParser, path: tuple = ()):
    """Yield ``(path, parser)`` for ``parser`` and every subcommand parser under it, e.g. (("train", "prior"), p)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk_parsers(child, path + (name,))


def build_parser() -> argparse.ArgumentParser:
    from speechmax import __version__

    parser = argparse.ArgumentParser(
        prog="speechmax", description="Debug speech classifiers by generating speech: activation maximization of a "
                                      "classifier,\nvocoded to audio, measured by a separate classifier and by listeners.",
        epilog="examples:\n  speechmax maximize --target yes --starts 8 --mode latent --out runs/yes\n"
               "  speechmax evaluate --out runs/eval --quick\n"
               "run `speechmax COMMAND --help` for a command's options and examples.")
    parser.add_argument("--version", action="version", version=f"speechmax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"speechmax.cli.{name}").register(sub)
    for _, p in walk_parsers(parser):
        p.formatter_class = HelpFormatter
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """``argv`` (default: the command line) as the command's arguments; with ``--config FILE`` the file's values
    stand where no flag is given."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    from_file = apply_config(parser, argv)
    args, extra = parser.parse_known_args(argv)
    fill_from_config(args, from_file)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
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
