#!/usr/bin/env bash
# Times each step of keyward's life cycle on a throw-away SoftHSM (release build): key
# generation per key type, sign latency per security level, each step of one enrollment,
# and `authority process` per request. Prints one line per measurement (median of N runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash testbeds/setup.sh
cargo build --quiet --release --locked --bin keyward
K=$PWD/target/release/keyward
N=${N:-7}
work=$(mktemp -d -t keyward-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
eval "$(bash testbeds/testbed.sh "$work")"
export SOFTHSM2_CONF KEYWARD_HOME KEYWARD_SO_PIN=so-pin-1 KEYWARD_PIN=user-pin-1 KEYWARD_AUTHORITY_PIN=user-pin-1
cd "$work"
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000 )); }
median() { sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "%.1f ms", m/1000}'; }
report() { printf '%-44s %s (n=%s)\n' "$1" "$(median)" "$N"; }

for t in authority user; do KEYWARD_NEW_PIN=user-pin-1 "$K" token init --free --label "$t" >/dev/null; done
echo hello > msg
for kt in rsa2048 rsa3072 p256; do
    for i in $(seq "$N"); do ms "$K" keyset create "gen-$kt-$i" --token user --key-type "$kt"; done | report "keyset create --key-type $kt"
done
"$K" keyset create std --token user >/dev/null
"$K" keyset create high --token user --security high >/dev/null
for lvl in std high; do
    for i in $(seq "$N"); do ms "$K" keyset sign "$lvl" msg -o sig; done | report "keyset sign (security $([[ $lvl == std ]] && echo standard || echo high))"
done

"$K" authority init --dir auth --token authority >/dev/null
"$K" authority cert --dir auth > certs.pem
for i in $(seq "$N"); do
    KEYWARD_NEW_PIN=p "$K" token init --free --label "card$i" >/dev/null 2>&1 || true
done
for i in $(seq "$N"); do ms "$K" authority add-user --dir auth "u$i"; done | report "authority add-user (Argon2id hash)"
for i in $(seq "$N"); do
    "$K" authority add-user --dir auth "v$i" > "v$i.key" 2>/dev/null
done
for i in $(seq "$N"); do ms env KEYWARD_TEMP_KEY="$(cat "v$i.key")" "$K" enroll --user "v$i" --keyset "v$i" --token user --authority-cert certs.pem -o "v$i.req"; done | report "enroll: make the request"
for i in $(seq "$N"); do ms "$K" authority process --dir auth "v$i.req" -o "v$i.reply"; done | report "authority process (per request)"
for i in $(seq "$N"); do ms "$K" enroll --complete "v$i.reply"; done | report "enroll --complete"
for i in $(seq "$N"); do
    "$K" authority add-user --dir auth "w$i" > "w$i.key" 2>/dev/null
done
for i in $(seq "$N"); do ms env KEYWARD_TEMP_KEY="$(cat "w$i.key")" "$K" enroll --user "w$i" --keyset "w$i" --token user --authority auth; done | report "enroll --authority (all three, one command)"
