"""Every subcommand's --help has a description and an example; every option has help text showing its default
(issue 20 item 8)."""
import argparse

import pytest

from speechmax.cli import build_parser, walk_parsers

PARSERS = list(walk_parsers(build_parser()))


def _name(path):
    return " ".join(("speechmax",) + path)


def test_tree_covers_every_command():
    names = {path for path, _ in PARSERS}
    for path in [(), ("maximize",), ("evaluate",), ("train", "classifier"), ("train", "prior"), ("train", "vocoder"),
                 ("bench", "vocoder"), ("bench", "maximize"), ("corpus", "build"), ("classify",), ("listen",)]:
        assert path in names


@pytest.mark.parametrize("path,parser", PARSERS, ids=[_name(p) for p, _ in PARSERS])
def test_help_has_description_example_and_defaults(path, parser):
    assert parser.description and len(parser.description) > 20, f"{_name(path)}: no description"
    assert parser.epilog and "speechmax " in parser.epilog and "example" in parser.epilog, \
        f"{_name(path)}: no example in the epilog"
    formatter, missing = parser._get_formatter(), []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        flag = "/".join(action.option_strings) or action.dest
        if not (action.help and action.help.strip()):
            missing.append(f"{flag}: no help text")
        elif action.option_strings and not action.required:   # what an option not given means
            shown = formatter._get_help_string(action) % {**vars(action), "default": action.default}
            if "default" not in shown.lower():
                missing.append(f"{flag}: help does not show the default")
    assert not missing, f"{_name(path)}: " + "; ".join(missing)


def test_help_renders():
    for path, parser in PARSERS:
        text = parser.format_help()
        assert "example" in text
