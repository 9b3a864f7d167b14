"""Logging and progress bars (issue 20 item 4): no print in the library, --log-level, bars only on a terminal
or with --progress."""
import ast
import logging
from pathlib import Path

import speechmax
from speechmax.cli import main
from speechmax.progress import progress_bar, progress_enabled, set_progress

ROOT = Path(speechmax.__file__).parent


def test_library_code_never_prints():
    found = []
    for path in ROOT.rglob("*.py"):
        if "cli" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "print() in library code: " + ", ".join(found)


def test_log_level_and_progress_flags(capsys):
    try:
        assert main(["--log-level", "warning", "info", "--json"]) == 0
        assert logging.getLogger("speechmax").level == logging.WARNING
        assert not progress_enabled()   # stderr is captured here, not a terminal
        with progress_bar(total=3, desc="x") as bar:
            assert bar.disable
        assert main(["--log-level", "DEBUG", "--progress", "info", "--json"]) == 0
        assert logging.getLogger("speechmax").level == logging.DEBUG and progress_enabled()
        with progress_bar(total=3, desc="shown") as bar:
            assert not bar.disable
            bar.update(3)
        assert "shown" in capsys.readouterr().err
        with progress_bar(False, total=3) as bar:   # a caller that asked for no bar gets none
            assert bar.disable
        logging.getLogger("speechmax.evaluate.run").info("stage done")
        assert "stage done" in capsys.readouterr().err
    finally:
        set_progress(None)
        logging.getLogger("speechmax").setLevel(logging.INFO)
