#!/usr/bin/env bash
# The tests' Node tools, pinned by scripts/node-tools/package-lock.json, installed with npm
# (packages from the npm registry through npm's cache, outside the clone):
#   install-node-tools.sh DEST
set -euo pipefail

dest=$1
tools=$(dirname "$0")/node-tools
stamp="$dest/.complete-$(cat "$tools/package.json" "$tools/package-lock.json" | sha256sum | cut -c1-16)"
if [ -e "$stamp" ]; then
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "npm not found: install Node.js (apt-get install nodejs npm)" >&2; exit 1; }
rm -rf "$dest"
mkdir -p "$dest"
cp "$tools/package.json" "$tools/package-lock.json" "$dest/"
(cd "$dest" && npm ci --no-audit --no-fund --silent)
touch "$stamp"
echo "node tools: $dest" >&2
