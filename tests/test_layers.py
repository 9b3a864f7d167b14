"""The package's structure: layers that only point down (import-linter's contracts in pyproject.toml), and imports
of speechmax modules inside functions only where a heavy dependency justifies them, each with its reason."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "speechmax").rglob("*.py")) + sorted((ROOT / "kernels").glob("*.py"))
MAX_DEFERRED = 10


def _lint_imports() -> str:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.fail("lint-imports is missing: install the test extra (pip install -e '.[test]')")
    return exe


def test_import_contracts_hold():
    out = subprocess.run([_lint_imports(), "--no-logo", "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def _is_speechmax(node: ast.AST, module: str) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "speechmax"
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "speechmax" for a in node.names)
    # importlib.import_module("speechmax...") / import_module(f"speechmax....") counts as an import too
    if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module":
        arg = node.args[0] if node.args else None
        text = ast.unparse(arg) if arg is not None else ""
        return "speechmax" in text or module.startswith("speechmax")
    return False


def deferred_imports(path: Path, root: Path = ROOT) -> list[tuple[Path, int, bool]]:
    """(file, line, has a reason) of each import of a speechmax module inside a function body."""
    text = path.read_text()
    lines = text.splitlines()
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    found = []
    for fn in ast.walk(ast.parse(text)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if _is_speechmax(node, module):
                line = lines[node.lineno - 1]
                above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                found.append((path, node.lineno, "#" in line or above.startswith("#")))
    return sorted(set(found))


def test_few_deferred_imports_each_with_a_reason():
    found = [d for p in SOURCES for d in deferred_imports(p)]
    where = "\n".join(f"{p.relative_to(ROOT)}:{n}{'' if ok else '  (no reason given)'}" for p, n, ok in found)
    assert len(found) <= MAX_DEFERRED, f"{len(found)} imports of speechmax modules inside functions:\n{where}"
    assert all(ok for *_, ok in found), f"a deferred import needs a comment saying why:\n{where}"


def test_the_counter_sees_deferred_imports(tmp_path):
    # the check above must be able to fail
    bad = tmp_path / "speechmax" / "x.py"
    bad.parent.mkdir()
    bad.write_text("import speechmax\n\ndef f():\n    from speechmax import features\n    # torch is heavy\n"
                   "    from . import ops\n    import importlib\n    importlib.import_module(f'speechmax.{f}')\n")
    found = deferred_imports(bad, root=tmp_path)
    assert [(n, ok) for _, n, ok in found] == [(4, False), (6, True), (8, False)]


def test_importing_the_package_does_not_import_torch():
    code = "import sys, speechmax; assert 'torch' not in sys.modules, 'torch imported'; print(speechmax.__version__)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
