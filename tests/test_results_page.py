"""RESULTS.md's tables are what the model cards and the committed evaluation say
(regenerate them with `python benchmarks/results_page.py`). JSON only: no model is loaded."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "results_page.py"


def _results_page():
    spec = importlib.util.spec_from_file_location("results_page", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_page_is_up_to_date():
    out = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_render_rewrites_stale_tables_and_keeps_the_prose():
    page = _results_page()
    text = (ROOT / "RESULTS.md").read_text()
    accuracy = "**99.81 %**"  # the default classifier's test accuracy, from its card
    assert accuracy in text
    stale = text.replace(accuracy, "**12.34 %**").replace("# speechmax — results", "# speechmax — results, edited")
    assert page.render(stale) == text.replace("# speechmax — results", "# speechmax — results, edited")


def test_a_lost_marker_is_an_error_naming_the_block():
    page = _results_page()
    text = (ROOT / "RESULTS.md").read_text().replace("<!-- end generated: vocoder-curve -->", "")
    with pytest.raises(ValueError, match="vocoder-curve"):
        page.render(text)
