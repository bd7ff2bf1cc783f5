# Shared by the module test beds (testbeds/<module>.sh): sourced, not run.
# Every bed script has one interface:
#   <module>.sh up DIR     makes throw-away tokens in DIR (and starts what the module needs);
#                          prints `export NAME=VALUE` lines (bash-quoted) for keyward:
#                          KEYWARD_MODULE, KEYWARD_MODULE_ARGS (when the module needs init args),
#                          the module's own variables, KEYWARD_HOME, and the tokens to use:
#                          KEYWARD_BED_INIT   "free": keyward initialises tokens in free slots
#                                             (`token init --free`, SO PIN KEYWARD_BED_SO_PIN);
#                                             "none": the bed made the one token there is
#                          KEYWARD_BED_TOKEN  that token's label (with KEYWARD_BED_INIT=none)
#                          KEYWARD_BED_PIN, KEYWARD_BED_SO_PIN  the user and SO PINs to use
#                          KEYWARD_BED_SETTLE=1  run `<module>.sh settle DIR` (with these
#                                             variables) after each command (tpm2.sh says why)
#   <module>.sh down DIR   stops what `up DIR` started (by the PIDs it wrote in DIR); safe to repeat
# PINs are exactly 8 characters: every module here accepts them (opencryptoki 4-8, kryoptic >= 8).
# The user PIN is not 12345678: opencryptoki takes that for its default user PIN and refuses to
# set it with C_SetPIN (so a PIN changed away from it could not be changed back).
set -euo pipefail

BED_PIN=24681357
BED_SO_PIN=87654321

# emit NAME VALUE: one export line, quoted for bash.
emit() { printf 'export %s=%q\n' "$1" "$2"; }

# die MESSAGE: one line on stderr saying what is wrong and what to do.
die() {
    echo "testbeds/$(basename "$0"): $*" >&2
    exit 1
}

# need PROGRAM PACKAGE MODULE: fail with an install hint when PROGRAM is missing.
need() {
    command -v "$1" >/dev/null ||
        die "$1 is missing: run KEYWARD_TEST_MODULES=$3 bash testbeds/setup.sh (apt-get install $2)"
}

# first_file PATH...: the first path that exists, or nothing.
first_file() {
    local p
    for p in "$@"; do
        [[ -e $p ]] && { echo "$p"; return; }
    done
    return 0
}

# stop_pidfile FILE: stops the process whose PID FILE holds, if it still runs; removes FILE.
stop_pidfile() {
    local file=$1 pid
    [[ -s $file ]] || return 0
    pid=$(tr -dc 0-9 < "$file")
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

# free_port: a TCP port on 127.0.0.1 nobody listens on, whose successor is free too.
free_port() {
    python3 - <<'PY'
import socket
while True:
    a = socket.socket()
    a.bind(("127.0.0.1", 0))
    port = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", port + 1))
    except OSError:
        continue
    finally:
        b.close()
        a.close()
    print(port)
    break
PY
}
