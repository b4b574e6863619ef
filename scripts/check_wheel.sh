#!/usr/bin/env bash
# The package as a user gets it: build the wheel and the sdist, install the wheel into a new virtualenv (no checkout
# on its path), and run `advpnml info` and `advpnml toy` from it; the presets and the embedded data must ship inside.
# Usage: scripts/check_wheel.sh [PYTHON]   (PYTHON builds the wheel; the project's .venv by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}
TORCH=${TORCH:-torch==2.13.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
"$PYTHON" -m build --no-isolation --wheel --sdist --outdir "$work/dist" . > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/advpnml-*.whl)
sdist=$(ls "$work"/dist/advpnml-*.tar.gz)
python3 - "$wheel" "$sdist" <<'PY'
import sys, tarfile, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
for need in ("advpnml/configs/mnist5k.toml", "advpnml/configs/_suite.toml", "advpnml/api.py", "advpnml/evaluation/engine.py"):
    assert need in names, f"the wheel lacks {need}"
assert not any(n.startswith(("tests/", "results/", "benchmarks/")) for n in names), "the wheel carries non-package files"
members = tarfile.open(sys.argv[2]).getnames()
assert any(m.endswith("src/advpnml/configs/cifar10.toml") for m in members), "the sdist lacks the presets"
print(f"wheel: {len(names)} files, sdist: {len(members)} members")
PY
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH" 2>&1 | grep -v "^WARNING: Location" || true
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel" 2>&1 | grep -v "^WARNING: Location" || true
cd "$work"  # not the checkout: the installed package only
"$work/venv/bin/python" -c "import advpnml, sys; assert '/src/advpnml' not in advpnml.__file__, advpnml.__file__; print('installed at', advpnml.__file__)"
# no pipe into head: under pipefail, head closing its end early kills the writer with SIGPIPE (make: Error 141)
"$work/venv/bin/advpnml" info > "$work/info.log"
sed -n 1,3p "$work/info.log"
grep -q "mnist5k   found (1000 test samples)" "$work/info.log"
grep -q "configs: cifar10, imagenet, mnist, mnist5k, mnist_official, toy2d" "$work/info.log"
"$work/venv/bin/advpnml" toy --out "$work/toy" > "$work/toy.log" 2>&1 || { tail -20 "$work/toy.log"; exit 1; }
test -s "$work/toy/toy.json" && test -s "$work/toy/toy_mechanisms.png"
echo "wheel check passed in $(( $(date +%s) - start )) s"
