#!/usr/bin/env bash
# Packs what bench/gpu_session.sh needs on a GPU machine whose image lacks the project's packages
# and cannot reach a package index: the wheels of polars, faiss-cpu and pydantic for its Python
# (3.12 there), unpacked into one site-packages tree and xz-compressed to .whl/site.tar.xz
# (43 MB; the wheels themselves are 76 MB, over the 64 MiB a device call may carry).
#     bash bench/gpu_pack.sh   # then carry .whl (ignored via .git/info/exclude) with the call
set -eu
PY=${PY:-.venv/bin/python}
PYVER=${PYVER:-3.12}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pkgs=()
for p in polars polars-runtime-32 faiss-cpu pydantic pydantic_core annotated-types typing-inspection; do
  v=$("$PY" -m pip show "$p" 2>/dev/null | awk '/^Version:/{print $2}')
  [ -n "$v" ] || { echo "$p is not installed in $PY's environment (run make test first)" >&2; exit 2; }
  pkgs+=("$p==$v")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$tmp/whl" "${pkgs[@]}"
mkdir -p "$tmp/site" .whl
for w in "$tmp"/whl/*.whl; do "$PY" -m zipfile -e "$w" "$tmp/site"; done
tar -C "$tmp/site" -cf - . | xz -T0 -9e > .whl/site.tar.xz.tmp && mv .whl/site.tar.xz.tmp .whl/site.tar.xz
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
ls -l .whl/site.tar.xz
