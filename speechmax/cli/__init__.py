"""The ``speechmax`` command. Each subcommand lives in its own module with ``register(subparsers, help)`` and its
handler; handlers only parse arguments and call the library. Only the module of the command being run is
imported (with the library it calls), so ``speechmax --help`` and ``speechmax listen`` do not load torch."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from speechmax import __version__
from speechmax.cli.config import apply_config, fill_from_config
from speechmax.progress import set_progress

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
# The subcommands (module speechmax.cli.NAME each) with the line `speechmax --help` shows, in its order.
COMMANDS = {
    "info": "version, backends and shipped models",
    "demo": "quick evaluation report + maximized, vocoded samples on the shipped defaults",
    "corpus": "build or inspect the offline Speech Commands corpus",
    "train": "train a classifier, prior or vocoder (resumes from OUT/last)",
    "classify": "what a classifier says about a wav, a .npy log-mel, or a folder of them",
    "synthesize": "log-mel (.npy) or wav -> audio with the WaveNet vocoder",
    "maximize": "activation maximization toward a class or a hidden unit",
    "evaluate": "the evaluation report: noise->class, vocoder control, class to class, figures, listening set",
    "listen": "self-hosted listening test (quality MOS and word identification)",
    "bench": "speed benchmarks: vocoder, maximize",
    "debugbench": "debugging benchmark: does the anomaly report find planted defects?",
}


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


def build_parser(commands=tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The whole command line; the subcommands not in ``commands`` appear by name and summary only (their
    modules, and the library they import, are not loaded)."""
    parser = argparse.ArgumentParser(
        prog="speechmax", description="Debug speech classifiers by generating speech: activation maximization of a "
                                      "classifier,\nvocoded to audio, measured by a separate classifier and by listeners.",
        epilog="examples:\n  speechmax maximize --target yes --starts 8 --mode latent --out runs/yes\n"
               "  speechmax evaluate --out runs/eval --quick\n"
               "run `speechmax COMMAND --help` for a command's options and examples.")
    parser.add_argument("--version", action="version", version=f"speechmax {__version__}")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="INFO", type=str.upper,
                        help="messages shown on stderr: INFO shows each stage of a long run, WARNING only problems")
    parser.add_argument("--progress", action="store_true",
                        help="progress bars even when stderr is not a terminal (default: on a terminal only)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, summary in COMMANDS.items():
        if name in commands:
            # deferred on purpose: a subcommand's module imports torch and the library it drives
            importlib.import_module(f"speechmax.cli.{name}").register(sub, summary)
        else:
            sub.add_parser(name, help=summary, add_help=False)
    for _, p in walk_parsers(parser):
        p.formatter_class = HelpFormatter
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """``argv`` (default: the command line) as the command's arguments; with ``--config FILE`` the file's values
    stand where no flag is given."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(commands=[a for a in argv if a in COMMANDS][:1])
    from_file = apply_config(parser, argv)
    args, extra = parser.parse_known_args(argv)
    fill_from_config(args, from_file)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests and tqdm replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


_handler = _StderrHandler()
_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))


def configure_logging(level: str, progress: bool) -> None:
    """The library's log records at ``level`` and above to stderr; progress bars on a terminal or if asked."""
    root = logging.getLogger("speechmax")
    root.setLevel(level)
    if _handler not in root.handlers:
        root.addHandler(_handler)
    set_progress(True if progress else None)


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, args.progress)
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
