#!/usr/bin/env bash
# Issue 3, item 8: one-shot signing, process start to signature, keyward vs pkcs11-tool.
#
#   bash benches/oneshot.sh
#
# Builds keyward --release, makes a throw-away SoftHSM2 token, creates an RSA-2048 keyset on
# it, and times with hyperfine
#   keyward keyset sign NAME FILE -o SIG                          (PIN from KEYWARD_PIN)
#   pkcs11-tool --login --pin P --sign --mechanism SHA256-RSA-PKCS --id ID -i FILE -o SIG
#   oneshot_raw MODULE LABEL ID FILE SIG                          (examples/oneshot_raw.rs)
# on the same key and token, with 16 and with 1,000 objects on the token. oneshot_raw is the
# floor: the same PKCS#11 calls keyward makes, with cryptoki alone and nothing else. The filler objects
# are EC P-256 key pairs made with CKA_PRIVATE on both halves, so a logged-in lookup of the
# signing key has to look at (and skip) every one of them. Target: keyward <= 0.85x.
# Each count is measured in several hyperfine passes with the order of the two commands
# alternating (a shared 2-core machine drifts); the summary is the median over passes.
# Results go to stderr and to benches/results-oneshot.txt (not committed).
#
# Knobs: ONESHOT_COUNTS (default "16 1000"), ONESHOT_PASSES (default 3), ONESHOT_RUNS
# (hyperfine --min-runs, default 40), ONESHOT_FILE_BYTES (default 4096), ONESHOT_KEEP=1
# (keep the token directory for profiling), KEYWARD_MODULE (module path).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

KEYWARD_EXTRA_PACKAGES="hyperfine python3 ${KEYWARD_EXTRA_PACKAGES:-}" bash testbeds/setup.sh
cargo build --release --locked --bin keyward --example oneshot_raw
kw=$root/target/release/keyward
raw=$root/target/release/examples/oneshot_raw

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
eval "$(bash testbeds/testbed.sh "$dir")"
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

# Filler: private EC P-256 key pairs made in one process (pkcs11-tool would need a process,
# and so a full load of the token, per pair: ~2 min for 1,000 objects instead of well under one).
fill_py=$(cat <<'PY'
import ctypes as C, sys
module, label, pin, start, pairs = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode(), int(sys.argv[4]), int(sys.argv[5])
lib, UL = C.CDLL(module), C.c_ulong
class Attr(C.Structure): _fields_ = [("type", UL), ("p", C.c_void_p), ("len", UL)]
class Mech(C.Structure): _fields_ = [("m", UL), ("p", C.c_void_p), ("len", UL)]
def ck(rv, what):
    if rv not in (0, 0x100): sys.exit(f"fill: {what} returned CKR 0x{rv:x}")
ck(lib.C_Initialize(None), "C_Initialize")
n = UL(0); ck(lib.C_GetSlotList(C.c_ubyte(1), None, C.byref(n)), "C_GetSlotList")
slots = (UL * n.value)(); ck(lib.C_GetSlotList(C.c_ubyte(1), slots, C.byref(n)), "C_GetSlotList")
info, slot = C.create_string_buffer(512), None
for s in slots[: n.value]:
    ck(lib.C_GetTokenInfo(UL(s), info), "C_GetTokenInfo")
    if info.raw[:32].rstrip(b" ") == label: slot = s
if slot is None: sys.exit(f"fill: no token labelled {label!r}")
h = UL(0); ck(lib.C_OpenSession(UL(slot), UL(6), None, None, C.byref(h)), "C_OpenSession")
ck(lib.C_Login(h, UL(1), pin, UL(len(pin))), "C_Login")
keep = []
def attr(t, v):
    v = bytes([v]) if isinstance(v, bool) else v
    b = C.create_string_buffer(v, len(v)); keep.append(b)
    return Attr(t, C.cast(b, C.c_void_p), len(v))
TOKEN, PRIVATE, LABEL, ID, SENSITIVE, SIGN, VERIFY, EC_PARAMS = 1, 2, 3, 0x102, 0x103, 0x108, 0x10A, 0x180
p256, mech = bytes.fromhex("06082a8648ce3d030107"), Mech(0x1040, None, 0)  # CKM_EC_KEY_PAIR_GEN
for i in range(start, start + pairs):
    kid, lab = b"\xf1\x11" + i.to_bytes(4, "big"), b"filler %d" % i
    pub = (Attr * 6)(attr(TOKEN, True), attr(PRIVATE, True), attr(ID, kid), attr(LABEL, lab), attr(VERIFY, True), attr(EC_PARAMS, p256))
    prv = (Attr * 6)(attr(TOKEN, True), attr(PRIVATE, True), attr(ID, kid), attr(LABEL, lab), attr(SIGN, True), attr(SENSITIVE, True))
    hp, hk = UL(0), UL(0)
    ck(lib.C_GenerateKeyPair(h, C.byref(mech), pub, UL(6), prv, UL(6), C.byref(hp), C.byref(hk)), "C_GenerateKeyPair")
    keep.clear()
lib.C_Logout(h); lib.C_CloseSession(h); lib.C_Finalize(None)
PY
)
objects=2 # the keyset's private and public key
fill_to() { # adds private EC P-256 key pairs (two objects each) until the token holds $1 objects
    local want=$1 t0=$SECONDS pairs=$((($1 - objects) / 2))
    if ((pairs > 0)); then
        python3 -c "$fill_py" "$module" "$label" "$KEYWARD_PIN" "$objects" "$pairs"
        objects=$((objects + 2 * pairs))
    fi
    if ((objects < want)); then # an odd count: one private data object
        "${p11[@]}" --write-object "$file" --type data --private --label "filler $objects" >/dev/null 2>&1
        objects=$((objects + 1))
    fi
    echo "token filled to $objects objects in $((SECONDS - t0)) s" >&2
}

results=$root/benches/results-oneshot.txt
version() {
    local rev
    rev=$(git rev-parse --short HEAD 2>/dev/null) || { echo "(not a git checkout)"; return; }
    git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null && echo "$rev" || echo "$rev + uncommitted changes"
}
passes=${ONESHOT_PASSES:-10}
kw_cmd="$kw keyset sign '$name' $file -o $dir/sig.kw"
raw_cmd="$raw $module $label $id $file $dir/sig.raw"
p11_cmd="${p11[*]} --sign --mechanism SHA256-RSA-PKCS --id $id -i $file -o $dir/sig.p11"
{
    echo "# keyward keyset sign vs pkcs11-tool --sign, $(date -u +%FT%TZ), keyward $(version)"
    echo "# $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)," \
        "softhsm2 $(dpkg-query -W -f='${Version}' softhsm2 2>/dev/null || echo '?')," \
        "opensc $(dpkg-query -W -f='${Version}' opensc 2>/dev/null || echo '?')," \
        "token dir and signature on $(df -T "$dir" | awk 'NR==2 {print $2}')"
    echo "# RSA-2048 CKM_SHA256_RSA_PKCS, ${ONESHOT_FILE_BYTES:-4096}-byte file; hyperfine -N, $passes passes (order alternating) of ${ONESHOT_RUNS:-15} runs per command"
    echo "# ms; mean = median over passes of hyperfine's mean, median = median over passes of hyperfine's median;"
    echo "# ratio = keyward / pkcs11-tool, median over passes of each pass's ratio [min..max]; target <= 0.85"
    echo "# raw = examples/oneshot_raw (the same PKCS#11 calls with cryptoki alone: the floor); raw ratio = raw / pkcs11-tool"
} >"$results"

for want in ${ONESHOT_COUNTS:-16 1000}; do
    fill_to "$want"
    have=$(count_objects)
    ((have == objects)) || { echo "oneshot.sh: expected $objects objects, pkcs11-tool lists $have" >&2; exit 1; }

    # Both tools must produce the same signature (PKCS#1 v1.5 is deterministic).
    "$kw" keyset sign "$name" "$file" -o "$dir/sig.kw" 2>/dev/null
    "${p11[@]}" --sign --mechanism SHA256-RSA-PKCS --id "$id" -i "$file" -o "$dir/sig.p11" >/dev/null 2>&1
    "$raw" "$module" "$label" "$id" "$file" "$dir/sig.raw"
    cmp -s "$dir/sig.kw" "$dir/sig.p11" || { echo "oneshot.sh: the signatures differ" >&2; exit 1; }
    cmp -s "$dir/sig.raw" "$dir/sig.p11" || { echo "oneshot.sh: the raw signature differs" >&2; exit 1; }

    sync # don't let the filler's writeback land in the first pass
    rows=()
    for ((pass = 1; pass <= passes; pass++)); do
        csv=$dir/hf-$want-$pass.csv
        echo "== $objects objects on the token, pass $pass/$passes" >&2
        if ((pass % 2)); then
            order=(-n keyward "$kw_cmd" -n raw "$raw_cmd" -n pkcs11-tool "$p11_cmd")
        else
            order=(-n pkcs11-tool "$p11_cmd" -n raw "$raw_cmd" -n keyward "$kw_cmd")
        fi
        hyperfine -N --style basic --warmup 3 --runs "${ONESHOT_RUNS:-15}" --export-csv "$csv" "${order[@]}" >&2
        # csv: command,mean,stddev,median,user,system,min,max (seconds)
        rows+=("$(awk -F, 'NR > 1 { m[$1] = $2 * 1000; d[$1] = $4 * 1000 }
            END { printf "%.2f %.2f %.2f %.2f %.2f %.2f", m["keyward"], m["pkcs11-tool"], d["keyward"], d["pkcs11-tool"], m["raw"], d["raw"] }' "$csv")")
    done
    printf '%s\n' "${rows[@]}" | awk -v n="$objects" '
        function med(a, k,   i, j, t) { for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
        { k++; km[k] = $1; pm[k] = $2; kd[k] = $3; pd[k] = $4; rm[k] = $5; rdd[k] = $6
          r[k] = $1 / $2; rd[k] = $3 / $4; f[k] = $5 / $2; fd[k] = $6 / $4 }
        END { printf "%5s objects  mean:   keyward %7.2f  raw %7.2f  pkcs11-tool %7.2f  ratio %.2f [%.2f..%.2f]  raw ratio %.2f\n", n, med(km, k), med(rm, k), med(pm, k), med(r, k), r[1], r[k], med(f, k)
              printf "%5s objects  median: keyward %7.2f  raw %7.2f  pkcs11-tool %7.2f  ratio %.2f [%.2f..%.2f]  raw ratio %.2f\n", n, med(kd, k), med(rdd, k), med(pd, k), med(rd, k), rd[1], rd[k], med(fd, k) }' |
        tee -a "$results" >&2
done

echo
cat "$results"
if [[ -n ${ONESHOT_KEEP:-} ]]; then
    trap - EXIT
    echo "token kept in $dir: eval \"\$(bash testbeds/testbed.sh $dir)\"" >&2
fi
