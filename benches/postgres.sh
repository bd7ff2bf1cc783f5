#!/usr/bin/env bash
# `authority process` commands per second (issue 16): one node against two nodes at once, the
# state in SQLite against PostgreSQL. Throw-away SoftHSM and PostgreSQL (testbeds/postgres.sh,
# on a Unix socket, stopped at the end). N requests per case (P-256, made beforehand on a user
# token); "two nodes" runs two streams of N/2 at once: on SQLite, two processes on the one
# directory (each with its own SoftHSM configuration, so they do not take turns on SoftHSM's
# lock); on PostgreSQL, node 1 and node 2 (`authority join`, each with its own copy of the token
# directory). Prints wall time, commands per second and the ratio two/one.
# PROFILE=debug uses the dev build.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-16}
PROFILE=${PROFILE:-release}
if [[ $PROFILE == release ]]; then
    cargo build --quiet --release --bin keyward
else
    cargo build --quiet --bin keyward
fi
K=$PWD/target/$PROFILE/keyward
[[ $PROFILE == debug ]] && K=$PWD/target/debug/keyward
PG=$PWD/testbeds/postgres.sh
work=$(mktemp -d /tmp/keyward-pg-bench.XXXXXX)
chmod 0711 "$work"
trap 'bash "$PG" stop "$work/pg" || true; rm -rf "$work"' EXIT
eval "$(bash testbeds/testbed.sh "$work/one")"
export SOFTHSM2_CONF KEYWARD_HOME KEYWARD_SO_PIN=so-pin-1 KEYWARD_PIN=user-pin-1 KEYWARD_AUTHORITY_PIN=user-pin-1
url=$(bash "$PG" start "$work/pg" $$)
pw=$work/pg/password
cd "$work"
for t in auth-sqlite auth-pg user; do KEYWARD_NEW_PIN=user-pin-1 "$K" token init --free --label "$t" >/dev/null; done
"$K" authority init --dir sqlite --token auth-sqlite >/dev/null
"$K" authority init --dir pg1 --token auth-pg --db "$url" --db-password-file "$pw" >/dev/null
# A second SoftHSM configuration: the same tokens (SQLite's second stream) …
cp "$SOFTHSM2_CONF" "$work/same-tokens.conf"
# … and node 2's copy of the token directory.
mkdir -p "$work/two/tokens"
cp -a "$work/one/tokens/." "$work/two/tokens/"
sed "s|$work/one/tokens|$work/two/tokens|" "$SOFTHSM2_CONF" > "$work/two.conf"
SOFTHSM2_CONF=$work/two.conf "$K" authority join --dir pg2 --token auth-pg --db "$url" --db-password-file "$pw" >/dev/null
for a in sqlite pg1; do "$K" authority cert --dir "$a" > "$a.pem"; done

requests() { # AUTHORITY-DIR BUNDLE PREFIX
    local i
    for i in $(seq "$N"); do
        "$K" authority add-user --dir "$1" "$3$i" > "$3$i.key" 2>/dev/null
        KEYWARD_TEMP_KEY="$(cat "$3$i.key")" "$K" enroll --user "$3$i" --keyset "$3$i" \
            --token user --key-type p256 --authority-cert "$2" -o "$3$i.req" >/dev/null 2>&1
    done
}
requests sqlite sqlite.pem s1-
requests sqlite sqlite.pem s2-
requests pg1 pg1.pem p1-
requests pg1 pg1.pem p2-

stream() { # CONF DIR PREFIX FROM TO
    local i
    for i in $(seq "$4" "$5"); do
        SOFTHSM2_CONF=$1 "$K" authority process --dir "$2" "$3$i.req" -o "$3$i.$2.reply" >/dev/null 2>>errors.log || echo "failed: $3$i on $2" >&2
    done
}
now() { date +%s%N; }
declare -A secs
run_case() { # NAME then streams as "CONF DIR PREFIX FROM TO" strings
    local name=$1 s e pids=()
    shift
    s=$(now)
    for st in "$@"; do
        # shellcheck disable=SC2086
        stream $st &
        pids+=($!)
    done
    wait "${pids[@]}"
    e=$(now)
    secs[$name]=$(( (e - s) / 1000000 ))
}
half=$((N / 2))
run_case sqlite-1 "$SOFTHSM2_CONF sqlite s1- 1 $N"
run_case sqlite-2 "$SOFTHSM2_CONF sqlite s2- 1 $half" "$work/same-tokens.conf sqlite s2- $((half + 1)) $N"
run_case pg-1 "$SOFTHSM2_CONF pg1 p1- 1 $N"
run_case pg-2 "$SOFTHSM2_CONF pg1 p2- 1 $half" "$work/two.conf pg2 p2- $((half + 1)) $N"
for a in sqlite pg1 pg2; do
    [[ $a == pg2 ]] && export SOFTHSM2_CONF=$work/two.conf
    "$K" authority log --dir "$a" --verify >/dev/null
done

printf '%-10s %-8s %10s %12s\n' store nodes "wall (ms)" "process/s"
for c in sqlite-1 sqlite-2 pg-1 pg-2; do
    printf '%-10s %-8s %10s %12s\n' "${c%-*}" "${c#*-}" "${secs[$c]}" \
        "$(awk -v n="$N" -v ms="${secs[$c]}" 'BEGIN { printf "%.2f", n * 1000 / ms }')"
done
for s in sqlite pg; do
    awk -v a="${secs[$s-1]}" -v b="${secs[$s-2]}" -v s="$s" 'BEGIN { printf "%s: two streams / one = %.2fx\n", s, a / b }'
done
echo "($N requests per case, $PROFILE build, $(nproc) cores)"
