#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs every test against real
# SoftHSM2 tokens (each test makes its own throw-away token directory), then the module matrix.
#
# Three passes: keyward talking to SoftHSM2 directly; the integration tests again with
# keyward talking to SoftHSM2 through the PKCS#11 shim (shim/) with no fault configured, which
# proves the shim forwards faithfully (the fault and lockout tests rely on it); the module
# matrix (tests/module_matrix.rs): the whole story on each PKCS#11 module of
# KEYWARD_TEST_MODULES (default softhsm,kryoptic,nss,opencryptoki,tpm2), one module at a time,
# each on beds its test starts (testbeds/<module>.sh up) and stops (down) — and this script stops
# whatever a killed test left running. It prints the time each module adds and writes
# target/module-matrix.md.
# KEYWARD_TEST_PASSES=direct, =shim or =matrix (or several, space-separated) runs those.
set -euo pipefail
cd "$(dirname "$0")/.."
modules=${KEYWARD_TEST_MODULES:-softhsm,kryoptic,nss,opencryptoki,tpm2}
modules=${modules//,/ }
export KEYWARD_TEST_MODULES=${modules// /,}
bash testbeds/setup.sh
. testbeds/rust-env.sh
export CARGO_TERM_COLOR=never
threads=${KEYWARD_TEST_THREADS:-4}
passes=${KEYWARD_TEST_PASSES:-direct shim matrix}
# --workspace: the PKCS#11 shim (shim/, a cdylib) is built next to keyward for the tests.
cargo build --locked --workspace --all-targets
# The virtual PIV card (testbeds/vcard/, its own workspace and cached target dir) for
# tests/piv_card.rs: built once per machine.
bash testbeds/piv.sh build
# Lints: the virtual card is its own workspace, so `cargo clippy --workspace` never sees it;
# it is linted here, in its cached target dir (the build above made its dependencies).
CARGO_TARGET_DIR=${KEYWARD_VCARD_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/keyward/vcard-target} \
    cargo clippy --locked --release --all-targets --manifest-path testbeds/vcard/Cargo.toml -- -D warnings
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
        awk '{ for (i = 1; i < NF - 1; i++) { if ($(i + 1) == "points" && $(i + 2) == "tried") t += $i; if ($(i + 1) == "consistent") s += $i; if ($(i + 1) == "known-failing,") k += $i } }
            END { printf "   total: %d crash points tried, %d consistent, %d known-failing (KNOWN_FAILURES in tests/crash_sweep.rs)\n", t, s, k }' "$crash_summary"
    fi
    rm -f "$summary" "$crash_summary"
}
rm -f "$summary" "$crash_summary"

# The module matrix's beds live here, so that whatever a killed test left running is stopped.
beds=$(mktemp -d -t keyward-beds.XXXXXX)
# A bed's directory is named <module>-XXXXXX (tests/util/modules.rs).
stop_beds() {
    local dir module
    for dir in "$beds"/*/*/; do
        [[ -d $dir ]] || continue
        module=$(basename "$dir")
        module=${module%%-*}
        bash "testbeds/$module.sh" down "$dir" || echo "test-all.sh: could not stop the $module bed $dir" >&2
    done
}
trap 'stop_beds; rm -rf "$beds"' EXIT
trap 'exit 130' INT TERM

matrix() {
    local module start failed=0 times=()
    rm -rf "${CARGO_TARGET_DIR:-target}/module-matrix" "${CARGO_TARGET_DIR:-target}/module-matrix.md"
    if [[ " $modules " == *" kryoptic "* ]]; then
        start=$SECONDS
        bash testbeds/kryoptic.sh build
        times+=("kryoptic build (cached after the first run): $((SECONDS - start)) s")
    fi
    for module in $modules; do
        echo "== module matrix: $module"
        start=$SECONDS
        mkdir -p "$beds/$module"
        KEYWARD_TEST_BEDS=$beds/$module cargo test --locked --test module_matrix --no-fail-fast -- \
            "matrix::$module::" --test-threads "$threads" || failed=1
        stop_beds
        times+=("$module: $((SECONDS - start)) s")
    done
    echo "== module matrix: time each module adds"
    printf '   %s\n' "${times[@]}"
    echo "== module matrix (${CARGO_TARGET_DIR:-target}/module-matrix.md)"
    cat "${CARGO_TARGET_DIR:-target}/module-matrix.md" 2>/dev/null || echo "   (not written: a bed broke)"
    return "$failed"
}

status=0
for pass in $passes; do
    case $pass in
    direct)
        echo "== pass 1: keyward → SoftHSM2"
        cargo test --locked --workspace --no-fail-fast -- --test-threads "$threads" --skip matrix:: || status=1
        sweep_summary "pass 1"
        ;;
    shim)
        echo "== pass 2: keyward → PKCS#11 shim (no faults) → SoftHSM2, the integration tests"
        # Left out: tests/fault_sweep.rs drives keyward through the shim already in pass 1
        # (the same work again, ~10 min); tests/crash_sweep.rs, whose faults are file-system
        # calls the shim does not see; the module matrix (pass 3; not SoftHSM-only);
        # and the PIV card test, which names its own module (OpenSC): the shim has nothing to add.
        # Also left out, as tests of what keyward writes rather than of how it drives a token:
        # the certificate linting (cert_profile), the command-line contract (cli_contract), the
        # fuzz corpus replay and bulk add-users (Argon2id per user; one login per batch).
        # And the two whose subject is the authority's storage, not the token: the PostgreSQL
        # nodes (postgres_nodes) and the key rollovers (rollover, mostly kill points).
        shim_tests=()
        for t in tests/*.rs; do
            t=$(basename "$t" .rs)
            case $t in
            fault_sweep | crash_sweep | module_matrix | piv_card | cert_profile | cli_contract | fuzz_corpus | bulk | postgres_nodes | rollover) ;;
            *) shim_tests+=(--test "$t") ;;
            esac
        done
        KEYWARD_TEST_VIA_SHIM=1 cargo test --locked --workspace --no-fail-fast "${shim_tests[@]}" -- \
            --test-threads "$threads" || status=1
        sweep_summary "pass 2"
        ;;
    matrix)
        echo "== pass 3: the module matrix on $modules"
        matrix || status=1
        ;;
    *)
        echo "test-all.sh: unknown pass $pass (direct, shim, matrix)" >&2
        exit 2
        ;;
    esac
done
exit "$status"
