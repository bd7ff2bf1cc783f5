#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs every test against real
# SoftHSM2 tokens (each test makes its own throw-away token directory).
set -euo pipefail
cd "$(dirname "$0")/.."
bash softhsm/setup.sh
export CARGO_TERM_COLOR=never
# --workspace: the PKCS#11 shim (shim/, a cdylib) is built next to keyward for tests/lockout.rs.
cargo build --locked --workspace --all-targets
cargo test --locked --workspace --no-fail-fast -- --test-threads "${KEYWARD_TEST_THREADS:-4}"
