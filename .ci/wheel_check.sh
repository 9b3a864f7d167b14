#!/usr/bin/env bash
# CI: the wheel works as a new user installs it, outside the source tree and without the editable install that
# `make` uses (which once hid packages missing from the wheel). Builds the wheel from a clean `git archive HEAD`,
# installs it with --no-deps into a fresh venv that borrows .venv's dependencies (torch, ...) through a .pth line,
# then, from a directory outside the tree, checks `speechmax info --json` and a 2-start latent maximize.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=$ROOT/.venv/bin/python
TMP=$(mktemp -d "${TMPDIR:-/tmp}/speechmax-wheel.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
t0=$SECONDS

mkdir "$TMP/src"
git archive HEAD | tar -x -C "$TMP/src"
"$ROOT/.venv/bin/pip" wheel -q --disable-pip-version-check --no-deps --no-build-isolation "$TMP/src" -w "$TMP/dist"
WHEEL=$(ls "$TMP"/dist/speechmax-*.whl)
echo "wheel-check: built $(basename "$WHEEL") in $((SECONDS - t0)) s"

# A venv of .venv's base interpreter, not --system-site-packages: .venv's site-packages is added as a plain path,
# so its .pth files (the editable install's finder) are not run and `import speechmax` can only find the wheel.
"$("$PY" -c 'import sys, os; print(os.path.join(sys.base_prefix, "bin", "python3"))')" -m venv "$TMP/venv"
SITE=$("$TMP/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$SITE/speechmax-deps.pth"
"$TMP/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-index "$WHEEL"

mkdir "$TMP/run"
cd "$TMP/run"
export PATH="$TMP/venv/bin:$PATH" OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
speechmax --help >/dev/null
speechmax info --json > info.json
speechmax maximize --target yes --starts 2 --mode latent --out "$TMP/run/m" --json > maximize.json
python - "$SITE" <<'EOF'
import json, os, sys

site = sys.argv[1]
import speechmax

assert speechmax.__file__.startswith(site), f"speechmax imported from {speechmax.__file__}, not the wheel in {site}"
info = json.load(open("info.json"))
assert info["backends"]["cpu"], "the wheel does not carry the C++ extension (speechmax._C)"
for name in ("classifier", "classifier-separate", "classifier-paper", "prior", "prior-paper", "vocoder"):
    asset = info["assets"].get(name)
    assert asset and asset["path"].startswith(site) and os.path.getsize(asset["path"]) > 0, f"asset {name}: {asset}"
from speechmax.assets import ASSET_DIR
from speechmax.listen.app import STATIC

assert list(ASSET_DIR.glob("vocoder-examples/*.wav")) and list(ASSET_DIR.glob("*.png")), "example wavs / PNGs missing"
assert (STATIC / "index.html").is_file(), "listen static files missing"
import speechmax.kernels  # noqa: F401  (kernels/ installs as speechmax.kernels)

m = json.load(open("maximize.json"))
assert m["n"] == 2 and m["targets"] == ["yes"] and m["samples"] == 2, m
assert set(m["hit_rate"]) == {"classifier", "separate"}, m
assert os.path.isfile(m["manifest"]), m
print(f"wheel-check: info ok ({len(info['assets'])} assets), maximize ok (hit rate {m['hit_rate']})")
EOF
echo "wheel-check: passed in $((SECONDS - t0)) s"
