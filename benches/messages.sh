#!/usr/bin/env bash
# Issue 13: send and read throughput and peak memory, keyward against `openssl cms` on the same
# content, side by side in one run (release build, a throw-away SoftHSM2, RSA keys, Alice
# sends to Bob). For each size (1 MiB and 1 GiB by default):
#   keyward send             keyward send --keyset alice --to bob big -o big.p7m
#   openssl sign + encrypt   openssl cms -sign -stream -nodetach -binary (Alice's token key
#                            through the PKCS#11 engine) | openssl cms -encrypt -stream -aes256
#                            -binary -outform DER (what keyward send does, streamed)
#   keyward read             keyward read --keyset bob big.p7m -o big.out
#   openssl decrypt + verify openssl cms -decrypt (Bob's token key through the engine) |
#                            openssl cms -verify -CAfile ca -binary
# Wall time is the median of RUNS runs; peak RSS the largest process of any run (GNU time's
# %M, which for a pipeline is its largest process). Prints a Markdown table.
#
#   bash benches/messages.sh                  # SIZES_MIB="1 1024" RUNS=3
#   SIZES_MIB="1 64" RUNS=5 bash benches/messages.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash testbeds/setup.sh
cargo build --quiet --release --locked --bin keyward
kw=$PWD/target/release/keyward
RUNS=${RUNS:-3}
SIZES_MIB=${SIZES_MIB:-"1 1024"}
[[ -x /usr/bin/time ]] || { echo "messages.sh: GNU time is missing: apt-get install time" >&2; exit 1; }

module=
for p in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
    /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so; do
    [[ -e $p ]] && { module=$p; break; }
done
[[ -n $module ]] || { echo "messages.sh: no SoftHSM2 module found" >&2; exit 1; }

work=$(mktemp -d -t keyward-bench-messages.XXXXXX)
trap 'rm -rf "$work"' EXIT
eval "$(bash testbeds/testbed.sh "$work")"
export SOFTHSM2_CONF KEYWARD_HOME PKCS11_MODULE_PATH=$module
export KEYWARD_SO_PIN=bench-so-pin KEYWARD_PIN=bench-user-pin KEYWARD_AUTHORITY_PIN=bench-user-pin
cd "$work"

echo "setting up: authority, alice and bob (RSA keys on SoftHSM) …" >&2
for t in authority alice-card bob-card; do
    KEYWARD_NEW_PIN=$KEYWARD_PIN "$kw" token init --free --label "$t" >/dev/null
done
"$kw" authority init --dir auth --token authority --name "CN=Bench Authority" >/dev/null 2>&1
enroll() { # user keyset card
    local key
    key=$("$kw" authority add-user --dir auth "$1" --email "$1@example.org" 2>/dev/null)
    KEYWARD_TEMP_KEY=$key "$kw" enroll --user "$1" --keyset "$2" --token "$3" --authority auth >/dev/null 2>&1
}
enroll alice alice alice-card
enroll bob bob bob-card
"$kw" --json keyset show bob > bob.json
"$kw" --json keyset show alice > alice.json
"$kw" keyset cert --encryption bob > bob-enc.pem
"$kw" keyset cert alice > alice-sign.pem
"$kw" authority cert --dir auth | sed '/-----END CERTIFICATE-----/q' > ca.pem
python3 - <<'PY'
import json
k = json.load(open("bob.json"))
enc = next(e for e in k["enrollment"]["encryption_keys"] if e["current"])
open("bob-key.uri", "w").write(enc["key_uri"] + ";pin-value=bench-user-pin")
k = json.load(open("alice.json"))
open("alice-key.uri", "w").write(k["signing_key_uri"] + ";pin-value=bench-user-pin")
PY
bob_key=$(cat bob-key.uri)
alice_key=$(cat alice-key.uri)

ssl_send="openssl cms -sign -stream -nodetach -binary -md sha256 -in big -signer alice-sign.pem \
-inkey '$alice_key' -keyform engine -engine pkcs11 2>/dev/null \
| openssl cms -encrypt -stream -binary -aes256 -outform DER -out ssl.p7m bob-enc.pem"
ssl_read="openssl cms -decrypt -binary -inform DER -in ssl.p7m -recip bob-enc.pem -inkey '$bob_key' \
-keyform engine -engine pkcs11 2>/dev/null \
| openssl cms -verify -CAfile ca.pem -binary -out ssl.out 2>/dev/null"
kw_send="$kw send --keyset alice --to bob big -o big.p7m 2>/dev/null"
kw_read="$kw read --keyset bob big.p7m -o big.out 2>/dev/null"

# measure NAME CMD: RUNS runs; prints "median_seconds max_rss_kib".
measure() {
    local times=() rss=0 i t m
    for ((i = 0; i < RUNS; i++)); do
        /usr/bin/time -f "%e %M" -o t.txt bash -c "$2" || { echo "messages.sh: $1 failed" >&2; exit 1; }
        read -r t m < <(tail -1 t.txt)
        times+=("$t")
        ((m > rss)) && rss=$m
    done
    printf '%s %s\n' "$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((RUNS + 1) / 2))p")" "$rss"
}

rows=()
for mib in $SIZES_MIB; do
    echo "content of $mib MiB …" >&2
    head -c $((mib * 1048576)) /dev/urandom > big
    read -r ks kr < <(measure "keyward send" "$kw_send")
    read -r os orss < <(measure "openssl sign + encrypt" "$ssl_send")
    read -r kd kdr < <(measure "keyward read" "$kw_read")
    cmp -s big big.out || { echo "messages.sh: keyward read other content" >&2; exit 1; }
    read -r od odr < <(measure "openssl decrypt + verify" "$ssl_read")
    cmp -s big ssl.out || { echo "messages.sh: openssl read other content" >&2; exit 1; }
    # Cross-check: OpenSSL opens keyward's message, keyward opens OpenSSL's.
    openssl cms -decrypt -binary -inform DER -in big.p7m -recip bob-enc.pem -inkey "$bob_key" \
        -keyform engine -engine pkcs11 2>/dev/null \
        | openssl cms -verify -CAfile ca.pem -binary -out x.out 2>/dev/null
    grep -q "Content-Type: application/octet-stream" <(head -c 200 x.out)
    rm -f x.out
    "$kw" read --keyset bob ssl.p7m -o x.out 2>/dev/null && cmp -s big x.out && rm -f x.out
    rows+=("$(awk -v m="$mib" -v ks="$ks" -v kr="$kr" -v os="$os" -v orss="$orss" \
        -v kd="$kd" -v kdr="$kdr" -v od="$od" -v odr="$odr" 'BEGIN {
        printf "| %s MiB | send | %.2f s | %.2f s | %.2f | %.1f MiB | %.1f MiB |\n", m, ks, os, os / (ks > 0 ? ks : 0.01), kr / 1024, orss / 1024
        printf "| %s MiB | read | %.2f s | %.2f s | %.2f | %.1f MiB | %.1f MiB |\n", m, kd, od, od / (kd > 0 ? kd : 0.01), kdr / 1024, odr / 1024
    }')")
    rm -f big big.p7m big.out ssl.p7m ssl.out
done

echo
echo "| content | step | keyward | openssl | keyward speed (openssl time / keyward time) | keyward peak RSS | openssl peak RSS |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "(median of $RUNS runs; $(nproc) CPUs; $(openssl version | cut -d' ' -f1-2))"
