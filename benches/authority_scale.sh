#!/usr/bin/env bash
# Cost of the authority's changing commands against its size (issue 11): add-user, process and
# revoke on an authority of SMALL users and on one of LARGE users (default 100 and 100,000),
# release build, throw-away SoftHSM. Also `users` and `crl`, which read everything (linear by
# design). The big authority is filled through keyward's own store with
# examples/authority_populate.rs (synthetic enrolled users: a record, two certificates and an
# archived key each). Prints the median of N runs per command and size, and the ratio
# large/small; target: ≤ 1.2 for add-user, process and revoke.
set -euo pipefail
cd "$(dirname "$0")/.."
SMALL=${SMALL:-100}
LARGE=${LARGE:-100000}
N=${N:-9}
cargo build --quiet --release --bin keyward --example authority_populate
K=$PWD/target/release/keyward
POP=$PWD/target/release/examples/authority_populate
work=$(mktemp -d -t keyward-scale.XXXXXX)
trap 'rm -rf "$work"' EXIT
eval "$(bash testbeds/testbed.sh "$work")"
export SOFTHSM2_CONF KEYWARD_HOME KEYWARD_SO_PIN=so-pin-1 KEYWARD_PIN=user-pin-1 KEYWARD_AUTHORITY_PIN=user-pin-1
cd "$work"
us() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A result

for t in auth-small auth-large user; do KEYWARD_NEW_PIN=user-pin-1 "$K" token init --free --label "$t" >/dev/null; done
for size in small large; do
    count=$SMALL; [[ $size == large ]] && count=$LARGE
    "$K" authority init --dir "$size" --token "auth-$size" >/dev/null
    "$K" authority cert --dir "$size" > "$size.pem"
    s=$(date +%s)
    "$POP" "$size" "$count" 2>/dev/null
    echo "populated $size: $count users in $(( $(date +%s) - s )) s, $(du -sh "$size" | cut -f1)" >&2
    # Requests to process: N users added beforehand, each with a request made on the user token.
    for i in $(seq "$N"); do
        "$K" authority add-user --dir "$size" "$size-p$i" > "$size-p$i.key" 2>/dev/null
        KEYWARD_TEMP_KEY="$(cat "$size-p$i.key")" "$K" enroll --user "$size-p$i" --keyset "$size-p$i" \
            --token user --authority-cert "$size.pem" -o "$size-p$i.req" >/dev/null 2>&1
    done
done
sync
# Small and large alternate run by run, so that other load on the machine falls on both alike.
time_both() { # NAME RUNS COMMAND (@S: the size, @I: the run)
    local name=$1 runs=$2 tmpl=$3 i size
    for i in $(seq "$runs"); do
        for size in small large; do
            local cmd=${tmpl//@S/$size}; cmd=${cmd//@I/$i}
            # shellcheck disable=SC2086
            echo "$size $(us $cmd)"
        done
    done > "times-$name"
    for size in small large; do
        result[$size,$name]=$(awk -v s="$size" '$1 == s {print $2}' "times-$name" | median)
    done
}
# `process` generates the user's RSA-2048 encryption key on the authority token; how long that
# takes varies from run to run (the search for primes) whatever the authority's size, so the
# time without it is shown too (keyward -v logs it).
time_process() {
    local i size s e kg
    for i in $(seq "$N"); do
        for size in small large; do
            s=$(date +%s%N)
            "$K" -v authority process --dir "$size" "$size-p$i.req" -o "$size-p$i.reply" >/dev/null 2>"process.err"
            e=$(date +%s%N)
            kg=$(sed -n 's/.*generated the user.s encryption key in \([0-9.]*\)\([a-zµ]*\)$/\1 \2/p' process.err |
                awk '{ if ($2 == "s") printf "%d", $1 * 1000000; else if ($2 == "ms") printf "%d", $1 * 1000; else printf "%d", $1 }')
            echo "$size $(( (e - s) / 1000 )) ${kg:-0}"
        done
    done > times-process
    for size in small large; do
        result[$size,process]=$(awk -v s="$size" '$1 == s {print $2}' times-process | median)
        result[$size,process-keygen]=$(awk -v s="$size" '$1 == s {print $3}' times-process | median)
        result[$size,process-rest]=$(awk -v s="$size" '$1 == s {print $2 - $3}' times-process | median)
    done
}
echo "load before: $(uptime)" >&2
time_both add-user "$N" "$K authority add-user --dir @S @S-a@I"
time_process
time_both revoke "$N" "$K authority revoke --dir @S @S-p@I"
time_both users 3 "$K authority users --dir @S"
time_both crl 3 "$K authority crl --dir @S -o @S.crl"
for size in small large; do "$K" authority log --dir "$size" --verify >/dev/null; done
printf '%-22s %14s %14s %8s\n' command "$SMALL users" "$LARGE users" ratio
echo "load after: $(uptime)" >&2
for c in add-user process process-keygen process-rest revoke users crl; do
    a=${result[small,$c]}; b=${result[large,$c]}
    printf '%-22s %11.1f ms %11.1f ms %8.2f\n' "authority $c" "$(echo "$a/1000" | bc -l)" "$(echo "$b/1000" | bc -l)" "$(echo "$b/$a" | bc -l)"
done
