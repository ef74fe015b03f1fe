# ConstIntel tasks. The README's two commands run recipes of this file through a
# bootstrap that installs `just` first:
#   ./scripts/dev up     bring the product up on this machine
#   ./scripts/dev test   every check CI runs (.ci/run calls exactly this)
# With just installed, `just up` and `just test` are the same. `just` lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Tools the project installs for itself (.data/tools/bin: just, a newer cmake) come first.
export PATH := justfile_directory() + "/.data/tools/bin:" + env_var_or_default("HOME", "/root") + "/.cargo/bin:" + env_var("PATH")

# Under CI a Cargo.lock that does not match the manifests is an error, not an update.
locked := if env_var_or_default("CI", "") =~ '^(true|1|yes)$' { "--locked" } else { "" }

# The dashboard builds only for wasm32, and its browser tests (dashboard-e2e) need the
# built bundle and Chromium: host builds, lints and tests leave both out (lint-dashboard
# and test-browser cover them).
host := "--workspace --exclude dashboard --exclude dashboard-e2e"

# List the recipes.
default:
    @just --list --unsorted

# (`exec` makes this shell's process id ctl's, which after-up watches while it waits for
# the fleet, loads demo data and prints the login.)

# The fleet `up` runs is a release build: it drains the demo brand more than twice as
# fast as a debug build (about 480 against 210 events/s through the identity merger on 2
# cores). Tests use the debug build.

# Bring the product up: tools, Postgres and Redis, build (release), migrate, then every service under `ctl up` (Ctrl-C stops all). Demo data and the dashboard URL follow once it is ready.
up: setup env-file services build-release build-dashboard migrate
    scripts/after-up $$ & exec target/release/ctl up

# Every check: format, lints (host and wasm), the whole test suite, the API fuzzer, the compose file, browser tests. Stops at the first failure; needs no terminal.
test: setup test-services fmt-check lint lint-dashboard doc build test-suite test-api-fuzz check-compose test-browser

# Install missing tools (apt packages, cmake >= 3.28, wasm target, wasm-bindgen-cli); quiet when all are present.
setup:
    scripts/setup

# Create .env from env.template with a generated admin password (first run only).
env-file:
    scripts/env-file

# Reach Postgres and Redis at DATABASE_URL / REDIS_URL, starting local ones under .data/ if needed.
services:
    scripts/local-services fleet

# Reach the Postgres and Redis the tests use (TEST_DATABASE_URL / TEST_REDIS_URL).
test-services:
    scripts/local-services test

# Stop the Postgres and Redis that `services` started under .data/.
services-stop:
    scripts/local-services stop

# Build every service binary and ctl (debug).
build:
    cargo build {{ locked }} {{ host }} --bins

# Build every service binary and ctl (release), for `up`.
build-release:
    cargo build {{ locked }} --release {{ host }} --bins

# Create the database if needed and apply the migrations.
migrate: build-release
    target/release/ctl migrate

# Build the dashboard (Leptos → wasm) into dashboard/dist/pkg, served by the api-gateway.
build-dashboard:
    dashboard/build.sh

# Load the demo brand into the running fleet (the demo issue provides `ctl demo`).
demo *ARGS:
    cargo run {{ locked }} -p ctl -- demo {{ ARGS }}

# Run one service in the foreground, e.g. `just run ingest` (settings from the environment and .env).
run SERVICE *ARGS:
    cargo run -p {{ SERVICE }} -- {{ ARGS }}

# Run the tests of one crate, e.g. `just test-crate identity` (extra arguments go to the runner).
test-crate CRATE *ARGS: test-services
    #!/usr/bin/env bash
    set -euo pipefail
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run -p {{ CRATE }} {{ ARGS }}
    else
        cargo test -p {{ CRATE }} {{ ARGS }}
    fi

# Format every crate.
fmt:
    cargo fmt --all

# Check formatting.
fmt-check:
    cargo fmt --all --check

# Clippy on every host crate and target, warnings as errors.
lint:
    cargo clippy {{ locked }} {{ host }} --all-targets -- -D warnings

# API docs of every host crate (no dependencies), warnings as errors: every doc link resolves.
doc:
    RUSTDOCFLAGS="-D warnings" cargo doc {{ locked }} {{ host }} --no-deps

# Clippy on the dashboard for its real target, wasm32.
lint-dashboard:
    cargo clippy {{ locked }} -p dashboard --target wasm32-unknown-unknown -- -D warnings
    cargo clippy {{ locked }} -p dashboard-e2e --all-targets -- -D warnings

# The whole test suite against the real Postgres and Redis (binaries built first: some tests run them).
test-suite: build
    #!/usr/bin/env bash
    set -euxo pipefail
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run {{ locked }} {{ host }} --no-fail-fast
        cargo test {{ locked }} {{ host }} --doc
        # The dashboard's own unit tests (formatting, the builders' drafts) run on the host.
        cargo nextest run {{ locked }} -p dashboard --lib
    else
        cargo test {{ locked }} {{ host }} --no-fail-fast
        cargo test {{ locked }} -p dashboard --lib
    fi

# The API fuzzer: schemathesis (installed by setup) against the gateway's served OpenAPI document as an admin, a bounded number of examples per operation.
test-api-fuzz: test-services
    cargo test {{ locked }} -p api-gateway --test schemathesis -- --ignored

# Validate infra/docker-compose.yml when a compose client exists (no engine needed).
check-compose:
    #!/usr/bin/env bash
    set -euo pipefail
    if docker compose version >/dev/null 2>&1; then
        docker compose -f infra/docker-compose.yml config -q
    elif command -v docker-compose >/dev/null; then
        docker-compose -f infra/docker-compose.yml config -q
    else
        echo "compose: no docker compose client here, file not validated"
        exit 0
    fi
    echo "compose: infra/docker-compose.yml is valid"

# Browser end-to-end tests of the dashboard in headless Chromium (builds the bundle first; screenshots go to docs/screenshots).
test-browser:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -x dashboard/e2e/run ]; then
        dashboard/e2e/run
    else
        echo "browser tests: none yet (dashboard/e2e/run comes with the dashboard issue)"
    fi
