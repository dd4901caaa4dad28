#!/usr/bin/env python3
"""Checks that the workspace's `rust-version` is true: no dependency needs a newer Rust than it
says. (Clippy's `incompatible_msrv` lint, on in `make lint`, checks jetscribe's own use of the
standard library against the same version.) Reads `cargo metadata`; builds nothing."""
import json
import subprocess
import sys


def version(text):
    return tuple(int(part) for part in text.split(".")[:3]) + (0,) * (3 - len(text.split(".")))


metadata = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
members = set(metadata["workspace_members"])
ours = {p["rust_version"] for p in metadata["packages"] if p["id"] in members}
if len(ours) != 1 or None in ours:
    sys.exit(f"rust-version: every workspace crate must inherit one rust-version, found {ours}")
declared = ours.pop()
needs = sorted(
    (
        (version(p["rust_version"]), p["name"], p["version"])
        for p in metadata["packages"]
        if p["id"] not in members and p.get("rust_version")
    ),
    reverse=True,
)
highest = needs[0][0] if needs else (0, 0, 0)
top = [f"{name} {ver}" for v, name, ver in needs if v == highest]
if version(declared) < highest:
    sys.exit(
        f"rust-version = {declared} is false: {', '.join(top)} need(s) "
        f"{'.'.join(map(str, highest))}"
    )
print(f"rust-version {declared}: dependencies need at most {'.'.join(map(str, highest))} ({', '.join(top)})")
