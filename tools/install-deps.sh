#!/usr/bin/env bash
# install-deps.sh: the Debian/Ubuntu packages bptt builds and tests with.
# Run as root (CI and a fresh machine are root; elsewhere prefix with sudo).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# clang also builds the fuzz targets; their runtime (libFuzzer, the clang
# sanitizers) is libclang-rt-dev, which clang only recommends.
packages=(meson ninja-build gcc libc6-dev pkg-config python3
          libcriterion-dev uthash-dev libopenblas-dev libjansson-dev zlib1g-dev clang libclang-rt-dev
          python3-torch python3-numpy libopenmpi-dev openmpi-bin
          libdnnl-dev # -Dblas=dnnl (CI builds it) and oneDNN's side of bench/run.py
          librsvg2-bin fonts-dejavu-core) # rsvg-convert and the fonts: tests/test_figures.py
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all packages present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}: run as root (or with sudo)" >&2
    exit 1
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
