"""``--config FILE``: a run described in a TOML file whose keys are the command's option names as Python
identifiers (``steps``, ``per_class``, ``out``; an option's destination such as ``n`` for --starts too); options given on the command line override the file. A run
writes its resolved options to ``OUT/config.toml``, and ``--config OUT/config.toml`` reproduces it."""
from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

from speechmax.cli.values import Number, Numbers
from speechmax.outputs import atomic_path

CONFIG_FILE = "config.toml"
# Namespace entries that are not settings of a run: the command path, the handler, global switches, and the
# decision to replace a folder (a one-off, not part of what the run is).
NOT_SETTINGS = {"command", "what", "func", "accepts_extra", "config", "overwrite", "log_level", "progress"}


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help=f"TOML file of this command's options (keys as in OUT/{CONFIG_FILE}, e.g. steps = 60, "
                             "per_class = 20); flags given here override it (default: none)")


def _chosen_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)command parser that ``argv`` selects: the first token naming a subcommand at each level."""
    tokens = iter(argv)
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None:
            return parser
        chosen = next((t for t in tokens if t in sub.choices), None)
        if chosen is None:
            return parser
        parser = sub.choices[chosen]


def _config_path(argv: list[str]) -> str | None:
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    return pre.parse_known_args(argv)[0].config


def apply_config(parser: argparse.ArgumentParser, argv: list[str]) -> dict:
    """When ``argv`` passes ``--config FILE`` to a command that takes it, make the file's values that command's
    defaults, so that flags on the command line win. Returns the values of repeatable options, which
    :func:`fill_from_config` sets after parsing (argparse would add the command line's to a list default).
    A bad file or an unknown key ends the program through the command parser's usage error."""
    leaf = _chosen_parser(parser, argv)
    actions, names = {}, {}   # dest -> its options (--recipe and --preset share one); key -> dest
    for a in leaf._actions:
        if a.option_strings and a.dest not in NOT_SETTINGS | {"help"}:
            actions.setdefault(a.dest, []).append(a)
            names[a.dest] = a.dest
            names.update({o[2:].replace("-", "_"): a.dest for o in a.option_strings if o.startswith("--")})
    path = _config_path(argv) if any(a.dest == "config" for a in leaf._actions) else None
    if path is None:
        return {}
    try:
        values = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        leaf.error(f"--config {path}: {e}")
    unknown = sorted(set(values) - set(names))
    if unknown:
        leaf.error(f"--config {path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    later = {}
    for key, value in values.items():
        key = names[key]
        action = actions[key][0]
        if action.choices is not None and value not in action.choices:
            leaf.error(f"--config {path}: {key} = {value!r} is not one of {', '.join(map(str, action.choices))}")
        wanted = bool if action.nargs == 0 else getattr(action.type, "base", action.type)   # values.Number's
        if wanted in (bool, int, float) and not isinstance(value, str) and not _is(value, wanted):
            leaf.error(f"--config {path}: {key} = {value!r} is not of type {wanted.__name__}")
        if isinstance(action.type, (Number, Numbers)):   # checked as the flag's value is (a string is, by argparse)
            try:
                value = action.type(value)
            except argparse.ArgumentTypeError as e:
                leaf.error(f"--config {path}: {key}: {e}")
        for a in actions[key]:
            a.required = False   # given by the file; a flag may still override it
            a.default = None if isinstance(a, argparse._AppendAction) else value
        if isinstance(action, argparse._AppendAction):
            later[key] = value if isinstance(value, list) else [value]
    return later


def _is(value, wanted) -> bool:
    if wanted is bool or isinstance(value, bool):
        return wanted is bool and isinstance(value, bool)
    return isinstance(value, (int, float) if wanted is float else wanted)


def fill_from_config(args: argparse.Namespace, later: dict) -> None:
    """Repeatable options absent from the command line take their values from the config file."""
    for key, value in later.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def resolved_config(args: argparse.Namespace) -> dict:
    """The run's options as a config file holds them (None, TOML having no null, is left out: the default)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in NOT_SETTINGS and v is not None and not callable(v)}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)   # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def write_config(args: argparse.Namespace, out: str | Path) -> Path:
    """Write the resolved options of this run to ``out / config.toml`` (atomically)."""
    path = Path(out) / CONFIG_FILE
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in resolved_config(args).items()))
    return path
