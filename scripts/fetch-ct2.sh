#!/usr/bin/env bash
# Fetches the native engines the transcriber runs, from PyPI wheels (cached outside the clone):
# - OpenNMT's official CTranslate2 shared library (with oneDNN inside, the engine that
#   faster-whisper runs) from the `ctranslate2` wheel into $1 (default vendor/ctranslate2/lib),
#   with the folder prepared for ct2rs's `system` feature;
# - Microsoft's ONNX Runtime shared library (which runs the Silero VAD model) from the
#   `onnxruntime` wheel into $2 (default vendor/onnxruntime/lib); the `ort` crate loads it at
#   run time (`load-dynamic`), so nothing is downloaded or linked at build time.
set -euo pipefail

CT2_VERSION=4.8.5
CT2_WHEEL_SHA256=79a30a2c974530dbb5083f4922d28ffad87e08542f423aa91c53fbf4543cc35f
ORT_VERSION=1.31.1
ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
dest=${1:-vendor/ctranslate2/lib}
ort_dest=${2:-vendor/onnxruntime/lib}
cache=${JETSCRIBE_CACHE:-$HOME/.cache/jetscribe}/wheels

# ONNX Runtime: the library alone (it needs only glibc and libstdc++), and its licences.
if [ ! -e "$ort_dest/.complete-$ORT_VERSION" ]; then
  mkdir -p "$cache" "$ort_dest"
  wheel=$(ls "$cache"/onnxruntime-"$ORT_VERSION"-cp311-*manylinux*x86_64*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_28_x86_64 "onnxruntime==$ORT_VERSION" -d "$cache"
    wheel=$(ls "$cache"/onnxruntime-"$ORT_VERSION"-cp311-*manylinux*x86_64*.whl | head -n1)
  fi
  echo "$ORT_WHEEL_SHA256  $wheel" | sha256sum --check --quiet
  ort_tmp=$(mktemp -d)
  unzip -q -o "$wheel" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" onnxruntime/LICENSE \
    onnxruntime/ThirdPartyNotices.txt -d "$ort_tmp"
  rm -f "$ort_dest"/*
  cp "$ort_tmp/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$ort_dest/"
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$ort_dest/libonnxruntime.so"
  cp "$ort_tmp/onnxruntime/LICENSE" "$ort_dest/LICENSE"
  cp "$ort_tmp/onnxruntime/ThirdPartyNotices.txt" "$ort_dest/ThirdPartyNotices.txt"
  rm -rf "$ort_tmp"
  touch "$ort_dest/.complete-$ORT_VERSION"
  echo "ONNX Runtime $ORT_VERSION library in $ort_dest" >&2
fi

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
