#!/usr/bin/env bash
# A Python virtual environment with the tools the tests drive the service with, pinned in
# scripts/python-tools.txt: the reference parser of Prometheus's text formats
# (prometheus-client), numpy, onnxruntime; and, without their dependencies, the packages of
# scripts/python-tools-nodeps.txt (faster-whisper, whose feature extractor and VAD are tests'
# references).
# Packages come from PyPI through pip's cache (outside the clone).
#   install-python-tools.sh DEST
set -euo pipefail

dest=$1
requirements=$(dirname "$0")/python-tools.txt
without_dependencies=$(dirname "$0")/python-tools-nodeps.txt
stamp="$dest/.complete-$(cat "$requirements" "$without_dependencies" | sha256sum | cut -c1-16)"
if [ -e "$stamp" ]; then
  exit 0
fi
python3 -m venv "$dest"
"$dest/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
"$dest/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$without_dependencies"
rm -f "$dest"/.complete-*
touch "$stamp"
echo "python tools: $dest" >&2
