#!/usr/bin/env bash
# EST load on one node (issue 16): N enrollments with C at a time against one
# `keyward authority serve` on a throw-away SoftHSM — openssl + curl clients (a P-256
# simpleenroll, then an RSA-2048 serverkeygen: one whole enrollment) and keyward clients
# (`enroll --server`, each with its own SoftHSM token) — and, in the same run, the authority
# token's raw rate of what one enrollment costs it (an RSA-2048 key pair generated and two
# signatures, with pkcs11-tool). Prints enrollments/s, p50/p99 latency, and the ratio of the
# EST rate to the raw rate. KEYWARD (default target/release/keyward, built here) picks the binary.
#   N=40 C=4 KN=8 bash benches/est.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-40}
C=${C:-4}
KN=${KN:-8}
RAW=${RAW:-20}
if [[ -z ${KEYWARD:-} ]]; then
    cargo build --quiet --release --bin keyward
    KEYWARD=$PWD/target/release/keyward
fi
K=$KEYWARD
for tool in curl openssl pkcs11-tool softhsm2-util; do
    command -v "$tool" >/dev/null || { echo "benches/est.sh: $tool is missing; run testbeds/setup.sh" >&2; exit 1; }
done
work=$(mktemp -d -t keyward-est.XXXXXX)
node_pid=
cleanup() { [[ -n $node_pid ]] && kill "$node_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
eval "$(bash testbeds/testbed.sh "$work")"
export SOFTHSM2_CONF KEYWARD_HOME KEYWARD_SO_PIN=so-pin-1 KEYWARD_PIN=auth-pin-1
module=$("$K" --json token list 2>/dev/null | sed -n 's/.*"module": *"\([^"]*\)".*/\1/p' | head -1)
module=${module:-/usr/lib/softhsm/libsofthsm2.so}
cd "$work"

KEYWARD_NEW_PIN=auth-pin-1 "$K" token init --free --label authority >/dev/null
"$K" authority init --dir auth --token authority --name "CN=Bench CA,O=Example" >/dev/null
"$K" authority cert --dir auth > bundle.pem
sed -n '1,/END CERTIFICATE/p' bundle.pem > ca.pem
{ for i in $(seq "$N"); do echo "o$i,o$i@example.org"; done
  for i in $(seq "$KN"); do echo "k$i,k$i@example.org"; done; } > users.csv
"$K" authority add-users --dir auth --from users.csv --out keys >/dev/null

# Requests made beforehand (not timed): a P-256 signing CSR and an RSA transport CSR per user.
mkdir -p csr
for i in $(seq "$N"); do
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout csr/s$i.key \
        -subj /CN=laptop -outform DER 2>/dev/null | openssl base64 > csr/s$i.b64
    openssl req -new -nodes -newkey rsa:2048 -keyout csr/t$i.key \
        -subj /CN=laptop -outform DER 2>/dev/null | openssl base64 > csr/t$i.b64
    printf 'user = "o%s:%s"\n' "$i" "$(tr -d '\n' < keys/o$i.tempkey)" > csr/o$i.curl
done
# keyward clients: each its own SoftHSM (own token directory, own process lock), as own hosts.
for i in $(seq "$KN"); do
    mkdir -p "kc$i/tokens" "kc$i/home"
    sed "s|@TOKENDIR@|$work/kc$i/tokens|" "$OLDPWD/testbeds/softhsm2.conf.in" > "kc$i/softhsm2.conf"
    SOFTHSM2_CONF=$work/kc$i/softhsm2.conf KEYWARD_HOME=$work/kc$i/home KEYWARD_NEW_PIN=user-pin-1 \
        "$K" token init --free --label card >/dev/null
done

# The token's raw rate: what one enrollment costs it, without EST, keyward or the store.
raw_one() {
    pkcs11-tool --module "$module" --token-label authority --login --pin auth-pin-1 \
        --keypairgen --key-type rsa:2048 --id "ee$1" --label bench >/dev/null 2>&1
    for _ in 1 2; do
        echo data | pkcs11-tool --module "$module" --token-label authority --login --pin auth-pin-1 \
            --sign --mechanism SHA256-RSA-PKCS --id "ee$1" >/dev/null 2>&1
    done
    pkcs11-tool --module "$module" --token-label authority --login --pin auth-pin-1 \
        --delete-object --type privkey --id "ee$1" >/dev/null 2>&1
}
s=$(date +%s%N)
for i in $(seq "$RAW"); do raw_one "$(printf '%02x' "$i")"; done
raw_ns=$(( $(date +%s%N) - s ))

"$K" authority serve --dir auth --listen 127.0.0.1:0 --ready-file ready >/dev/null 2>serve.log &
node_pid=$!
for _ in $(seq 600); do [[ -s ready ]] && break; sleep 0.1; done
addr=$(cat ready)
url=https://$addr/.well-known/est

openssl_one() {
    local i=$1 s e
    s=$(date +%s%N)
    curl -sf --cacert ca.pem -K "csr/o$i.curl" -H 'Content-Type: application/pkcs10' \
        --data-binary "@csr/s$i.b64" "$url/simpleenroll" -o "csr/s$i.p7" &&
    curl -sf --cacert ca.pem -K "csr/o$i.curl" -H 'Content-Type: application/pkcs10' \
        --data-binary "@csr/t$i.b64" "$url/serverkeygen" -o "csr/t$i.mp" || { echo "FAIL o$i" >&2; return 1; }
    e=$(date +%s%N)
    echo $(( (e - s) / 1000000 ))
}
keyward_one() {
    local i=$1 s e
    s=$(date +%s%N)
    SOFTHSM2_CONF=$work/kc$i/softhsm2.conf KEYWARD_HOME=$work/kc$i/home KEYWARD_PIN=user-pin-1 \
        KEYWARD_TEMP_KEY="$(tr -d '\n' < keys/k$i.tempkey)" \
        "$K" enroll --user "k$i" --keyset laptop --token card --authority-cert bundle.pem \
        --server "https://$addr" >/dev/null 2>>kc$i.err || { echo "FAIL k$i" >&2; return 1; }
    e=$(date +%s%N)
    echo $(( (e - s) / 1000000 ))
}
export -f openssl_one keyward_one
export url addr work K

run() { # name count function → "wall_ms" and latencies in $1.lat
    local s
    s=$(date +%s%N)
    seq "$2" | xargs -P "$C" -I{} bash -c "$3 {}" > "$1.lat"
    echo $(( ($(date +%s%N) - s) / 1000000 ))
}
pct() { sort -n "$1" | awk -v p="$2" '{a[NR]=$1} END {i=int(NR*p/100+0.999); if(i<1)i=1; print a[i]}'; }

o_ms=$(run openssl "$N" openssl_one)
k_ms=$(run keyward "$KN" keyward_one)
ok_o=$(wc -l < openssl.lat); ok_k=$(wc -l < keyward.lat)
raw_rate=$(awk -v n="$RAW" -v ns="$raw_ns" 'BEGIN {printf "%.2f", n / (ns / 1e9)}')
"$K" authority log --dir auth --verify >/dev/null

printf '\nEST on one node (%s, %d at a time), SoftHSM, %s\n\n' "$(basename "$K")" "$C" "$(nproc) cores"
printf '| client | enrollments | ok | per s | p50 ms | p99 ms | EST/raw |\n|---|---|---|---|---|---|---|\n'
for c in openssl keyward; do
    n=$N; ms=$o_ms; ok=$ok_o
    [[ $c == keyward ]] && { n=$KN; ms=$k_ms; ok=$ok_k; }
    rate=$(awk -v n="$ok" -v ms="$ms" 'BEGIN {printf "%.2f", n / (ms / 1000)}')
    ratio=$(awk -v a="$rate" -v b="$raw_rate" 'BEGIN {printf "%.2f", a / b}')
    printf '| %s | %d | %d | %s | %s | %s | %s |\n' "$c" "$n" "$ok" "$rate" "$(pct $c.lat 50)" "$(pct $c.lat 99)" "$ratio"
done
printf '| raw token (keygen RSA-2048 + 2 signatures, pkcs11-tool) | %d | %d | %s | | | 1.00 |\n' "$RAW" "$RAW" "$raw_rate"
echo "audit log verifies after the run"
