#!/usr/bin/env bash
# The syscall crash sweep alone (tests/crash_sweep.rs): every state-changing command killed
# (SIGKILL) and failed (ENOSPC, EIO) at its file-system calls through strace, then checked
# through keyward's own command line. Prints one line per command and the total.
#
#   bash testbeds/crash-sweep.sh                  # the suite's default points
#   bash testbeds/crash-sweep.sh authority        # only the commands whose test name matches
#   KEYWARD_CRASH_STRIDE=1 bash testbeds/crash-sweep.sh   # every point of every command
set -euo pipefail
cd "$(dirname "$0")/.."
bash testbeds/setup.sh
. testbeds/rust-env.sh
export CARGO_TERM_COLOR=never
threads=${KEYWARD_TEST_THREADS:-2}
summary=${CARGO_TARGET_DIR:-target}/tmp/crash-sweep.txt
rm -f "$summary"
status=0
cargo test --locked --test crash_sweep -- --test-threads "$threads" ${1:+"$1"} || status=$?
if [[ -s $summary ]]; then
    echo "== crash sweep: SIGKILL/ENOSPC/EIO points per command"
    sort "$summary"
    awk '{ for (i = 1; i < NF - 1; i++) { if ($(i + 1) == "points" && $(i + 2) == "tried") t += $i; if ($(i + 1) == "consistent") s += $i; if ($(i + 1) == "known-failing,") k += $i } }
        END { printf "   total: %d crash points tried, %d consistent, %d known-failing (KNOWN_FAILURES in tests/crash_sweep.rs)\n", t, s, k }' "$summary"
fi
exit "$status"
