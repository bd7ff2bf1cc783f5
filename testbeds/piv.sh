#!/usr/bin/env bash
# A virtual PIV smart card behind a real driver stack, for tests:
#   OpenSC's opensc-pkcs11.so → pcscd → vsmartcard's vpcd → keyward-vcard (testbeds/vcard/,
#   piv-authenticator on trussed's virtual platform; RAM only, constant RNG seed: tests only).
#
#   testbeds/piv.sh up DIR     build the card, start pcscd and the card (logs and PIDs in DIR),
#                              provision keys and certificates in 9A 9C 9D 9E, print `export` lines
#   testbeds/piv.sh down DIR   stop both, by the PIDs in DIR
#   testbeds/piv.sh build      only build the card (what `up` does first)
#   testbeds/piv.sh pull DIR [N]  pull the card out of the reader: now (waits until the reader
#                              is empty), or with N as the Nth APDU from now arrives (to pull it
#                              in the middle of the next command; returns at once)
#   testbeds/piv.sh insert DIR put it back (waits until the reader shows it again)
#
# Provisioning goes through the card's own interface, as a card issuer would (keys cannot be
# generated through PKCS#11 on a PIV card): mutual authentication with the default 3DES
# management key, GENERATE ASYMMETRIC per slot as a raw APDU, and a certificate for each public
# key loaded with `piv-tool -C` (OpenSC shows a key only when its slot holds a certificate).
#   9A  RSA-2048  PIV authentication   (its certificate's CN is the token label)
#   9C  RSA-2048  digital signature    (OpenSC marks it CKA_ALWAYS_AUTHENTICATE: PIN at every use)
#   9D  RSA-2048  key management       (decryption)
#   9E  P-256     card authentication
# PIN 123456, PUK 12345678 (the card's defaults). pcscd's socket is machine-wide: one card at
# a time on a machine.
#
# OpenSC's own configuration for the card is DIR/opensc.conf (exported as OPENSC_CONF): the
# default, plus `user_pin_unblock_style = set_pin_in_unlogged_session`, without which OpenSC
# offers no way to unblock a PIN through PKCS#11. With it, C_SetPIN without a login takes the
# PUK as the old PIN and sends RESET RETRY COUNTER, which `keyward token unblock` uses when the
# card refuses the SO login (a PIV card cannot VERIFY its PUK, so OpenSC's
# `init_pin_in_so_session` fails there with CKR_GENERAL_ERROR: the card answers 6A88).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODULE=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so
LABEL=keyward-piv
PIN=123456
PUK=12345678
VCARD_TARGET=${KEYWARD_VCARD_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/keyward/vcard-target}
VCARD=$VCARD_TARGET/release/keyward-vcard

die() {
    echo "piv.sh: $*" >&2
    exit 1
}

need_tools() {
    local missing=()
    for tool in pcscd opensc-tool piv-tool pkcs11-tool openssl cargo; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [[ -e /etc/reader.conf.d/vpcd ]] || missing+=("vpcd")
    [[ -e $MODULE ]] || missing+=("$MODULE")
    if ((${#missing[@]})); then
        die "missing: ${missing[*]}; install them with: apt-get install -y --no-install-recommends pcscd vsmartcard-vpcd opensc openssl (and Rust's cargo)"
    fi
}

build_card() {
    # Its own workspace and lock file (testbeds/vcard/Cargo.lock), its own cached target dir:
    # built once per machine (~2 min), then up to date in a second.
    CARGO_TARGET_DIR=$VCARD_TARGET cargo build --release --locked --quiet \
        --manifest-path "$ROOT/testbeds/vcard/Cargo.toml" ||
        die "building the virtual card (testbeds/vcard) failed"
}

alive() {
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Waits until pcscd lists the card in vpcd's reader.
wait_for_card() {
    local i
    for i in $(seq 1 100); do
        if opensc-tool -a >/dev/null 2>&1; then
            return 0
        fi
        alive "$DIR/vcard.pid" || die "the card exited; see $DIR/vcard.log"
        sleep 0.1
    done
    die "the card did not appear in the reader within 10 s; see $DIR/pcscd.log and $DIR/vcard.log"
}

# Bytes of a piv-tool hex dump (its "Received" part), as one uppercase hex string.
received_hex() {
    awk '/^Received/ { on = 1; next } on { print substr($0, 1, 48) }' | tr -d ' \n' |
        tr 'a-f' 'A-F'
}

# piv-tool with the management key (mutual authentication, 3DES, key reference 9B).
piv_admin() {
    PIV_EXT_AUTH_KEY=$DIR/admin.key piv-tool -A M:9B:03 "$@"
}

# GENERATE ASYMMETRIC in slot $1 with algorithm $2 (07 RSA-2048, 11 P-256); writes the
# public key as SubjectPublicKeyInfo PEM to $3.
generate() {
    local slot=$1 alg=$2 out=$3 hex
    hex=$(piv_admin -s "00:47:00:$slot:05:AC:03:80:01:$alg:00" 2>>"$DIR/provision.log" |
        tee -a "$DIR/provision.log" | received_hex)
    case $alg in
    07)
        # 7F49 82 0109 | 81 82 0100 <modulus> | 82 03 <exponent>
        [[ ${hex:0:18} == 7F4982010981820100 ]] || die "slot $slot: unexpected GENERATE ASYMMETRIC answer; see $DIR/provision.log"
        local n=${hex:18:512} e=${hex:534:6}
        printf 'asn1=SEQUENCE:spki\n[spki]\nalg=SEQUENCE:alg\nkey=BITWRAP,SEQUENCE:rsa\n[alg]\noid=OID:rsaEncryption\nnull=NULL\n[rsa]\nn=INTEGER:0x%s\ne=INTEGER:0x%s\n' \
            "$n" "$e" >"$out.cnf"
        ;;
    11)
        # 7F49 43 | 86 41 <04 X Y>
        [[ ${hex:0:10} == 7F49438641 ]] || die "slot $slot: unexpected GENERATE ASYMMETRIC answer; see $DIR/provision.log"
        printf 'asn1=SEQUENCE:spki\n[spki]\nalg=SEQUENCE:alg\nkey=FORMAT:HEX,BITSTRING:%s\n[alg]\noid=OID:id-ecPublicKey\ncurve=OID:prime256v1\n' \
            "${hex:10:130}" >"$out.cnf"
        ;;
    esac
    openssl asn1parse -genconf "$out.cnf" -noout -out "$out.der" >/dev/null
    openssl pkey -pubin -inform DER -in "$out.der" -out "$out"
}

# A certificate for the public key $2, subject CN $3, key usage $4, issued by the test CA;
# loaded into slot $1.
certify() {
    local slot=$1 pub=$2 cn=$3 usage=$4
    printf 'keyUsage=critical,%s\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' \
        "$usage" >"$DIR/$slot.ext"
    openssl x509 -new -subj "/CN=$cn" -days 3650 -set_serial "0x$slot$(date +%s)" \
        -force_pubkey "$pub" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
        -extfile "$DIR/$slot.ext" -outform DER -out "$DIR/$slot.der" 2>>"$DIR/provision.log"
    openssl x509 -inform DER -in "$DIR/$slot.der" -out "$DIR/$slot.pem"
    # piv-tool -C exits with the number of bytes written (mod 256): the status means nothing;
    # the certificate is checked through PKCS#11 below.
    piv_admin -C "$slot" -i "$DIR/$slot.pem" >>"$DIR/provision.log" 2>&1 || true
}

provision() {
    # The card's default management key: 01..08 three times.
    printf '\x01\x02\x03\x04\x05\x06\x07\x08%.0s' 1 2 3 >"$DIR/admin.key"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$DIR/ca.key" -out "$DIR/ca.pem" \
        -subj "/CN=keyward PIV test CA" -days 3650 2>>"$DIR/provision.log"
    generate 9A 07 "$DIR/9A.pub"
    generate 9C 07 "$DIR/9C.pub"
    generate 9D 07 "$DIR/9D.pub"
    generate 9E 11 "$DIR/9E.pub"
    certify 9A "$DIR/9A.pub" "$LABEL" digitalSignature
    certify 9C "$DIR/9C.pub" "keyward PIV signature" digitalSignature,nonRepudiation
    certify 9D "$DIR/9D.pub" "keyward PIV key management" keyEncipherment
    certify 9E "$DIR/9E.pub" "keyward PIV card authentication" digitalSignature
    local objects
    objects=$(pkcs11-tool --module "$MODULE" --list-objects --type cert 2>&1)
    echo "$objects" >>"$DIR/provision.log"
    local n
    n=$(grep -c '^Certificate Object' <<<"$objects" || true)
    [[ $n == 4 ]] || die "expected 4 certificates on the card, found $n; see $DIR/provision.log"
}

up() {
    need_tools
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    if alive "$DIR/pcscd.pid" || alive "$DIR/vcard.pid"; then
        die "a card is already up for $DIR; run: $0 down $DIR"
    fi
    if pidof pcscd >/dev/null; then
        die "another pcscd is running (PID $(pidof pcscd)); its socket is machine-wide: stop it first"
    fi
    build_card
    : >"$DIR/provision.log"
    write_opensc_conf
    export OPENSC_CONF=$DIR/opensc.conf
    # No -d: pcscd's debug log would show every APDU, PINs included.
    pcscd -f >"$DIR/pcscd.log" 2>&1 &
    echo $! >"$DIR/pcscd.pid"
    rm -f "$DIR/pulled"
    "$VCARD" --pull-file "$DIR/pulled" >"$DIR/vcard.log" 2>&1 &
    echo $! >"$DIR/vcard.pid"
    wait_for_card
    provision
    local serial
    serial=$(pkcs11-tool --module "$MODULE" --list-token-slots 2>/dev/null |
        awk -F': *' '/serial num/ { print $2; exit }')
    echo "export KEYWARD_PIV_MODULE=$MODULE"
    echo "export KEYWARD_PIV_TOKEN='pkcs11:token=$LABEL;serial=$serial'"
    echo "export KEYWARD_PIV_LABEL=$LABEL"
    echo "export KEYWARD_PIV_PIN=$PIN"
    echo "export KEYWARD_PIV_PUK=$PUK"
    echo "export KEYWARD_PIV_CA=$DIR/ca.pem"
    echo "export KEYWARD_PIV_DIR=$DIR"
    echo "export OPENSC_CONF=$DIR/opensc.conf"
}

write_opensc_conf() {
    cat >"$DIR/opensc.conf" <<'CONF'
app default {
	framework pkcs15 {
		# The card changes under the tests' feet (PIN changes, pulls): no cached files.
		use_file_caching = no;
	}
	pkcs11 {
		# C_SetPIN without a login, the PUK as the old PIN: RESET RETRY COUNTER.
		user_pin_unblock_style = set_pin_in_unlogged_session;
	}
}
CONF
}

# Is a card in vpcd's reader (as pcscd sees it)?
card_present() {
    OPENSC_CONF=$DIR/opensc.conf opensc-tool -a >/dev/null 2>&1
}

# Writes the card's pull file in one step (the card reads it at every APDU).
set_pulled() {
    echo "$1" >"$DIR/pulled.new"
    mv "$DIR/pulled.new" "$DIR/pulled"
}

pull() {
    alive "$DIR/vcard.pid" || die "no card is up for $DIR"
    if [[ -n ${1:-} ]]; then
        [[ $1 =~ ^[1-9][0-9]*$ ]] || die "pull DIR N: N is a positive number of APDUs"
        set_pulled "after $1"
        return 0
    fi
    set_pulled now
    local i
    for i in $(seq 1 100); do
        card_present || return 0
        sleep 0.1
    done
    die "the reader still shows the card 10 s after pulling it; see $DIR/vcard.log"
}

insert() {
    alive "$DIR/vcard.pid" || die "no card is up for $DIR"
    rm -f "$DIR/pulled" "$DIR/pulled.new"
    wait_for_card
    wait_for_token
}

# Waits until OpenSC's PKCS#11 module shows the card's token again: pcscd can see the card
# (opensc-tool -a) a moment before a new PKCS#11 session finds the token present.
wait_for_token() {
    local i
    for i in $(seq 1 100); do
        if OPENSC_CONF=$DIR/opensc.conf pkcs11-tool --module "$MODULE" --list-token-slots 2>/dev/null |
            grep -q "serial num"; then
            return 0
        fi
        sleep 0.1
    done
    die "the card's token did not come back to OpenSC's PKCS#11 module within 10 s; see $DIR/pcscd.log and $DIR/vcard.log"
}

stop() {
    local pidfile=$1 pid
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

down() {
    [[ -d $DIR ]] || return 0
    stop "$DIR/vcard.pid"
    stop "$DIR/pcscd.pid"
}

case ${1:-} in
build)
    command -v cargo >/dev/null || die "cargo is missing; install Rust (https://rustup.rs)"
    build_card
    ;;
up | down | insert)
    [[ -n ${2:-} ]] || die "usage: $0 $1 DIR"
    DIR=$2
    "$1"
    ;;
pull)
    [[ -n ${2:-} ]] || die "usage: $0 pull DIR [N]"
    DIR=$2
    pull "${3:-}"
    ;;
*)
    die "usage: $0 up|down|insert DIR, $0 pull DIR [N], or $0 build"
    ;;
esac
