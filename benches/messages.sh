#!/usr/bin/env bash
# Issue 5: send and read latency, process start to finished file (release build), on a
# throw-away SoftHSM2: an authority, Alice and Bob on their own cards and ten more users
# (enrolled, on one shared card). Measured with hyperfine:
#   send 1 MiB to Bob            keyward send --keyset alice --to bob big -o big.p7m
#   read 1 MiB as Bob            keyward read --keyset bob big.p7m -o big.out
#   send 1 KiB to 10 recipients  keyward send --keyset alice --to u1 … --to u10 small -o ten.p7m
#   read it as the 10th          keyward read --keyset u10 ten.p7m -o ten.out
# and, for comparison, OpenSSL on the same 1 MiB and Bob's certificate:
#   openssl cms -encrypt (AES-256, software, no signature)
#   openssl cms -sign through the PKCS#11 engine, then -encrypt (what keyward send does)
#   openssl cms -decrypt through the PKCS#11 engine (the decryption half of keyward read)
# Prints the mean (± σ) of each in ms.
#
#   bash benches/messages.sh            # RUNS=20 WARMUP=3 by default
set -euo pipefail
cd "$(dirname "$0")/.."
KEYWARD_EXTRA_PACKAGES="hyperfine ${KEYWARD_EXTRA_PACKAGES:-}" bash testbeds/setup.sh
cargo build --quiet --release --locked --bin keyward
kw=$PWD/target/release/keyward
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}

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

echo "setting up: authority, alice, bob and 10 more users (RSA keys on SoftHSM) …" >&2
for t in authority alice-card bob-card crowd-card; do
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
ten=()
for i in $(seq 10); do
    enroll "u$i" "u$i" crowd-card
    ten+=(--to "u$i")
done

head -c 1048576 /dev/urandom > big
head -c 1024 /dev/urandom > small
"$kw" send --keyset alice --to bob big -o big.p7m 2>/dev/null
"$kw" send --keyset alice "${ten[@]}" small -o ten.p7m 2>/dev/null
"$kw" --json keyset show bob > bob.json
python3 - <<'PY'
import json
k = json.load(open("bob.json"))
enc = next(e for e in k["enrollment"]["encryption_key"] if e["current"])
open("bob-enc.pem", "w").write(enc["certificate"])
open("bob-key.uri", "w").write("pkcs11:token=%s;id=%s;type=private;pin-value=bench-user-pin" % (
    k["token_label"], "".join("%" + enc["id"][i:i + 2] for i in range(0, len(enc["id"]), 2))))
PY
"$kw" --json keyset show alice > alice.json
python3 - <<'PY'
import json
k = json.load(open("alice.json"))
open("alice-sign.pem", "w").write(k["enrollment"]["signing_certificate"])
open("alice-key.uri", "w").write(k["signing_key_uri"] + ";pin-value=bench-user-pin")
PY
bob_key=$(cat bob-key.uri)
alice_key=$(cat alice-key.uri)
# Sanity: each measured command works before it is timed.
"$kw" read --keyset bob big.p7m -o big.out 2>/dev/null && cmp -s big big.out
"$kw" read --keyset u10 ten.p7m -o ten.out 2>/dev/null && cmp -s small ten.out
openssl cms -decrypt -binary -inform DER -in big.p7m -recip bob-enc.pem -inkey "$bob_key" \
    -keyform engine -engine pkcs11 -out ssl.inner 2>/dev/null
grep -q "smime-type=signed-data" ssl.inner

hyperfine --style basic --warmup "$WARMUP" --runs "$RUNS" --export-csv results.csv \
    -n "keyward send 1 MiB to bob" "$kw send --keyset alice --to bob big -o big.p7m" \
    -n "keyward read 1 MiB as bob" "$kw read --keyset bob big.p7m -o big.out" \
    -n "keyward send 1 KiB to 10 recipients" "$kw send --keyset alice ${ten[*]} small -o ten.p7m" \
    -n "keyward read 10-recipient msg as u10" "$kw read --keyset u10 ten.p7m -o ten.out" \
    -n "openssl cms -encrypt 1 MiB (software)" \
    "openssl cms -encrypt -binary -aes256 -in big -outform DER -out ssl.p7m bob-enc.pem" \
    -n "openssl sign via engine + encrypt 1 MiB" \
    "openssl cms -sign -binary -nodetach -md sha256 -in big -signer alice-sign.pem -inkey '$alice_key' -keyform engine -engine pkcs11 -out ssl.signed && openssl cms -encrypt -aes256 -in ssl.signed -outform DER -out ssl2.p7m bob-enc.pem" \
    -n "openssl cms -decrypt 1 MiB via engine" \
    "openssl cms -decrypt -binary -inform DER -in big.p7m -recip bob-enc.pem -inkey '$bob_key' -keyform engine -engine pkcs11 -out ssl.inner" \
    >/dev/null 2>hyperfine.err || { cat hyperfine.err >&2; exit 1; }

printf '\n%-42s %12s\n' "measurement (n=$RUNS)" "mean"
# CSV: command,mean,stddev,median,user,system,min,max (seconds)
tail -n +2 results.csv | awk -F, '{ printf "%-42s %8.1f ms ± %.1f\n", $1, $2 * 1000, $3 * 1000 }'
