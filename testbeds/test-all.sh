#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs every test against real
# SoftHSM2 tokens (each test makes its own throw-away token directory).
#
# Two passes: keyward talking to SoftHSM2 directly, then every integration test again with
# keyward talking to SoftHSM2 through the PKCS#11 shim (shim/) with no fault configured, which
# proves the shim forwards faithfully (the fault and lockout tests rely on it).
# KEYWARD_TEST_PASSES=direct or =shim runs one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash testbeds/setup.sh
export CARGO_TERM_COLOR=never
threads=${KEYWARD_TEST_THREADS:-4}
passes=${KEYWARD_TEST_PASSES:-direct shim}
# --workspace: the PKCS#11 shim (shim/, a cdylib) is built next to keyward for the tests.
cargo build --locked --workspace --all-targets
# tests/fault_sweep.rs appends one line per command here; printed after each pass.
summary=${CARGO_TARGET_DIR:-target}/tmp/fault-sweep.txt
# tests/crash_sweep.rs does the same for the syscall crash sweep.
crash_summary=${CARGO_TARGET_DIR:-target}/tmp/crash-sweep.txt
sweep_summary() {
    if [[ -s $summary ]]; then
        echo "== fault sweep, $1: injection points per command"
        sort "$summary"
        awk '{ for (i = 1; i < NF; i++) { if ($(i + 1) == "injection") t += $i; if ($(i + 1) == "survived" || $(i + 1) == "survived;") s += $i } }
            END { printf "   total: %d injection points tried, %d survived\n", t, s }' "$summary"
    fi
    if [[ -s $crash_summary ]]; then
        echo "== crash sweep, $1: SIGKILL/ENOSPC/EIO points per command"
        sort "$crash_summary"
        awk '{ for (i = 1; i < NF - 1; i++) { if ($(i + 1) == "points" && $(i + 2) == "tried") t += $i; if ($(i + 1) == "consistent") s += $i } }
            END { printf "   total: %d crash points tried, %d consistent\n", t, s }' "$crash_summary"
    fi
    rm -f "$summary" "$crash_summary"
}
rm -f "$summary" "$crash_summary"
for pass in $passes; do
    case $pass in
    direct)
        echo "== pass 1: keyward → SoftHSM2"
        cargo test --locked --workspace --no-fail-fast -- --test-threads "$threads"
        sweep_summary "pass 1"
        ;;
    shim)
        echo "== pass 2: keyward → PKCS#11 shim (no faults) → SoftHSM2, every integration test"
        KEYWARD_TEST_VIA_SHIM=1 cargo test --locked --workspace --no-fail-fast --test '*' -- \
            --test-threads "$threads"
        sweep_summary "pass 2"
        ;;
    *)
        echo "test-all.sh: unknown pass $pass (direct, shim)" >&2
        exit 2
        ;;
    esac
done
