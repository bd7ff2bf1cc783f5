#!/usr/bin/env bash
# Cost per user of `authority add-users` (issue 14): SMALL (100) and LARGE (10,000) users added
# by one command each to a fresh authority (throw-away SoftHSM), and one user alone to measure
# the fixed cost (process start, token login, state check). Cost is CPU time (user + system of
# keyward and the SoftHSM it loads), which other load on a shared machine does not inflate the
# way it does wall time (both are printed). Prints total, per user and marginal per user
# ((T(n) − T(1)) / (n − 1)), and the ratio large/small of the marginal CPU cost; target ≤ 1.2.
# Dominated by the Argon2id hash of each temporary key (m = 19 MiB).
# PROFILE=debug uses the dev build (Argon2 is built with opt-level 3 there too).
set -euo pipefail
cd "$(dirname "$0")/.."
SMALL=${SMALL:-100}
LARGE=${LARGE:-10000}
PROFILE=${PROFILE:-release}
if [[ $PROFILE == release ]]; then
    cargo build --quiet --release --bin keyward
else
    cargo build --quiet --bin keyward
fi
K=$PWD/target/$PROFILE/keyward
work=$(mktemp -d -t keyward-bulk.XXXXXX)
trap 'rm -rf "$work"' EXIT
eval "$(bash testbeds/testbed.sh "$work")"
export SOFTHSM2_CONF KEYWARD_HOME KEYWARD_SO_PIN=so-pin-1 KEYWARD_PIN=user-pin-1
cd "$work"
# "WALL_MS CPU_MS" of one command (CPU: the children's user + system time, from `times`).
cost() {
    local s e
    s=$(date +%s%N)
    local cpu
    cpu=$( ( "$@" >/dev/null 2>&1; times ) | tail -1 | awk '{
        split($1, u, /[ms]/); split($2, y, /[ms]/); printf "%d", (u[1] * 60 + u[2] + y[1] * 60 + y[2]) * 1000 }')
    e=$(date +%s%N)
    echo "$(( (e - s) / 1000000 )) $cpu"
}
users() { { echo "user,email"; for i in $(seq "$1"); do echo "u$i,u$i@example.org"; done; } > "$2"; }
declare -A t w
for size in one small large; do
    KEYWARD_NEW_PIN=user-pin-1 "$K" token init --free --label "auth-$size" >/dev/null
    "$K" authority init --dir "$size" --token "auth-$size" >/dev/null
done
users 1 one.csv; users "$SMALL" small.csv; users "$LARGE" large.csv
for size in one small large; do
    read -r w[$size] t[$size] < <(cost "$K" authority add-users --dir "$size" --from "$size.csv" --out "keys-$size")
    n=$(ls "keys-$size" | wc -l)
    echo "$size: $n users added in ${w[$size]} ms wall, ${t[$size]} ms CPU" >&2
done
awk -v one="${t[one]}" -v s="${t[small]}" -v l="${t[large]}" -v ns="$SMALL" -v nl="$LARGE" \
    -v wone="${w[one]}" -v ws="${w[small]}" -v wl="${w[large]}" 'BEGIN {
    ms = (s - one) / (ns - 1); ml = (l - one) / (nl - 1);
    printf "fixed cost (1 user): %d ms CPU (%d ms wall)\n", one, wone;
    printf "%6d users: %9d ms CPU total, %6.1f ms/user, marginal %6.1f ms/user (wall %d ms)\n", ns, s, s / ns, ms, ws;
    printf "%6d users: %9d ms CPU total, %6.1f ms/user, marginal %6.1f ms/user (wall %d ms)\n", nl, l, l / nl, ml, wl;
    printf "ratio %d/%d of the marginal CPU cost per user: %.3f (target <= 1.2); of the CPU per user: %.3f; of the wall time per user: %.3f\n", nl, ns, ml / ms, (l / nl) / (s / ns), (wl / nl) / (ws / ns);
}'
