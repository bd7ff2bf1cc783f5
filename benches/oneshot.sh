#!/usr/bin/env bash
# Issue 3, item 8: one-shot signing, process start to signature, keyward vs pkcs11-tool.
#
#   bash benches/oneshot.sh
#
# Builds keyward --release, makes a throw-away SoftHSM2 token, creates an RSA-2048 keyset on
# it, and times with hyperfine
#   keyward keyset sign NAME FILE -o SIG                          (PIN from KEYWARD_PIN)
#   pkcs11-tool --login --pin P --sign --mechanism SHA256-RSA-PKCS --id ID -i FILE -o SIG
# on the same key and token, with 16 and with 1,000 objects on the token. The filler objects
# are EC P-256 key pairs made with CKA_PRIVATE on both halves, so a logged-in lookup of the
# signing key has to look at (and skip) every one of them. Target: keyward <= 0.85x.
# Results go to stdout and to benches/results-oneshot.txt.
#
# Knobs: ONESHOT_COUNTS (default "16 1000"), ONESHOT_FILE_BYTES (default 4096),
# ONESHOT_RUNS (hyperfine --min-runs, default 50), KEYWARD_MODULE (module path).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

KEYWARD_EXTRA_PACKAGES="hyperfine ${KEYWARD_EXTRA_PACKAGES:-}" bash softhsm/setup.sh
cargo build --release --locked --bin keyward
kw=$root/target/release/keyward

module=${KEYWARD_MODULE:-}
if [[ -z $module ]]; then
    for p in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
        /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
        [[ -e $p ]] && { module=$p; break; }
    done
fi
[[ -n $module ]] || { echo "oneshot.sh: no SoftHSM2 module found; set KEYWARD_MODULE" >&2; exit 1; }

dir=$(mktemp -d -t keyward-oneshot.XXXXXX)
trap 'rm -rf "$dir"' EXIT
eval "$(bash softhsm/testbed.sh "$dir")"
export KEYWARD_PIN=12345678 KEYWARD_NEW_PIN=12345678 KEYWARD_SO_PIN=87654321
label=oneshot
name="oneshot bench"

"$kw" token init --free --label "$label" >/dev/null
"$kw" keyset create "$name" --token "$label" >/dev/null
id=$("$kw" keyset show "$name" --json | sed -n 's/.*"signing_id": *"\([0-9a-f]*\)".*/\1/p')
[[ -n $id ]] || { echo "oneshot.sh: could not read the keyset's signing id" >&2; exit 1; }

file=$dir/message
head -c "${ONESHOT_FILE_BYTES:-4096}" /dev/urandom >"$file"
p11=(pkcs11-tool --module "$module" --token-label "$label" --login --pin "$KEYWARD_PIN")

count_objects() {
    "${p11[@]}" --list-objects 2>/dev/null | grep -cE '^(Private Key|Public Key|Secret Key|Data|Certificate) Object'
}

objects=2 # the keyset's private and public key
fill_to() { # adds private EC P-256 key pairs (two objects each) until the token holds $1 objects
    local want=$1 t0=$SECONDS
    while ((objects + 2 <= want)); do
        "${p11[@]}" --keypairgen --key-type EC:prime256v1 --private \
            --id "$(printf 'f111%06x' "$objects")" --label "filler $objects" >/dev/null 2>&1
        objects=$((objects + 2))
    done
    if ((objects < want)); then # an odd count: one private data object
        "${p11[@]}" --write-object "$file" --type data --private --label "filler $objects" >/dev/null 2>&1
        objects=$((objects + 1))
    fi
    echo "token filled to $objects objects in $((SECONDS - t0)) s" >&2
}

results=$root/benches/results-oneshot.txt
{
    echo "# keyward keyset sign vs pkcs11-tool --sign, $(date -u +%FT%TZ)"
    echo "# $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'),"\
        "softhsm2 $(dpkg-query -W -f='${Version}' softhsm2 2>/dev/null || echo '?'),"\
        "opensc $(dpkg-query -W -f='${Version}' opensc 2>/dev/null || echo '?'),"\
        "token dir on $(df -T "$dir" | awk 'NR==2 {print $2}')"
    echo "# RSA-2048 CKM_SHA256_RSA_PKCS, ${ONESHOT_FILE_BYTES:-4096}-byte file, hyperfine -N mean ± sd; target ratio <= 0.85"
    printf '%-8s %-20s %-20s %s\n' objects keyward_ms pkcs11-tool_ms ratio
} >"$results"

for want in ${ONESHOT_COUNTS:-16 1000}; do
    fill_to "$want"
    have=$(count_objects)
    ((have == objects)) || { echo "oneshot.sh: expected $objects objects, pkcs11-tool lists $have" >&2; exit 1; }

    # Both tools must produce the same signature (PKCS#1 v1.5 is deterministic).
    "$kw" keyset sign "$name" "$file" -o "$dir/sig.kw" 2>/dev/null
    "${p11[@]}" --sign --mechanism SHA256-RSA-PKCS --id "$id" -i "$file" -o "$dir/sig.p11" 2>/dev/null
    cmp -s "$dir/sig.kw" "$dir/sig.p11" || { echo "oneshot.sh: the signatures differ" >&2; exit 1; }

    csv=$dir/hf-$want.csv
    echo "== $objects objects on the token" >&2
    hyperfine -N --warmup 5 --min-runs "${ONESHOT_RUNS:-50}" --export-csv "$csv" \
        -n keyward "$kw keyset sign '$name' $file -o $dir/sig.kw" \
        -n pkcs11-tool "${p11[*]} --sign --mechanism SHA256-RSA-PKCS --id $id -i $file -o $dir/sig.p11" \
        >&2
    # csv: command,mean,stddev,median,user,system,min,max (seconds)
    awk -F, -v n="$objects" '
        NR == 2 { km = $2 * 1000; ks = $3 * 1000 }
        NR == 3 { pm = $2 * 1000; ps = $3 * 1000 }
        END { printf "%-8s %-20s %-20s %.2f\n", n, sprintf("%.2f ± %.2f", km, ks),
              sprintf("%.2f ± %.2f", pm, ps), km / pm }' "$csv" >>"$results"
done

echo
cat "$results"
