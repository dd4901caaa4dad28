#!/usr/bin/env bash
# Fetches OpenNMT's official CTranslate2 shared library (with oneDNN inside, the engine that
# faster-whisper runs) from the PyPI `ctranslate2` wheel into $1 (default vendor/ctranslate2/lib),
# and prepares the folder for ct2rs's `system` feature. Wheels are cached outside the clone.
set -euo pipefail

CT2_VERSION=4.8.5
CT2_WHEEL_SHA256=79a30a2c974530dbb5083f4922d28ffad87e08542f423aa91c53fbf4543cc35f
dest=${1:-vendor/ctranslate2/lib}
cache=${JETSCRIBE_CACHE:-$HOME/.cache/jetscribe}/wheels

if [ -e "$dest/libctranslate2.so" ] && [ -e "$dest/.complete-$CT2_VERSION" ]; then
  exit 0
fi
mkdir -p "$cache" "$dest"
wheel=$(ls "$cache"/ctranslate2-"$CT2_VERSION"-*manylinux*x86_64*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 "ctranslate2==$CT2_VERSION" -d "$cache"
  wheel=$(ls "$cache"/ctranslate2-"$CT2_VERSION"-*manylinux*x86_64*.whl | head -n1)
fi
echo "$CT2_WHEEL_SHA256  $wheel" | sha256sum --check --quiet

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unzip -q -o "$wheel" 'ctranslate2.libs/*' -d "$tmp"
rm -f "$dest"/*
cp "$tmp"/ctranslate2.libs/libctranslate2-*.so.* "$tmp"/ctranslate2.libs/libgomp-*.so.* "$dest"/
lib=$(cd "$dest" && ls libctranslate2-*.so.* | head -n1)
ln -sf "$lib" "$dest/libctranslate2.so"
# ct2rs 0.10.3's `system` mode always names these static archives on its link line; the official
# library needs none of them, so empty archives satisfy the linker.
for a in libcpu_features.a libcublas_static.a libcublasLt_static.a libculibos.a; do
  ar rcs "$dest/$a"
done
touch "$dest/.complete-$CT2_VERSION"
echo "CTranslate2 $CT2_VERSION library in $dest" >&2
