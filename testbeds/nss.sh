#!/usr/bin/env bash
# NSS softokn as a keyward test bed (interface: testbeds/lib.sh):
#   testbeds/nss.sh up DIR | down DIR
# One NSS database in DIR/nssdb, made by certutil; its password is the user PIN. softokn needs
# its database in C_Initialize's pReserved (KEYWARD_MODULE_ARGS). Of its two tokens keyward uses
# "NSS Certificate DB" (the other, "NSS Generic Crypto Services", has no login). It has no SO:
# the token cannot be initialised through PKCS#11.
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"

up() {
    local dir=$1 module
    need certutil libnss3-tools nss
    module=$(first_file /usr/lib/x86_64-linux-gnu/libsoftokn3.so /usr/lib/aarch64-linux-gnu/libsoftokn3.so \
        /usr/lib64/libsoftokn3.so)
    [[ -n $module ]] || die "NSS softokn is missing: run KEYWARD_TEST_MODULES=nss bash testbeds/setup.sh (apt-get install libnss3)"
    mkdir -p "$dir/nssdb" "$dir/home"
    (umask 077; printf '%s\n' "$BED_PIN" > "$dir/nss.pw")
    certutil -N -d "sql:$dir/nssdb" -f "$dir/nss.pw" >&2
    rm -f "$dir/nss.pw"
    emit KEYWARD_MODULE "$module"
    emit KEYWARD_MODULE_ARGS "configdir='sql:$dir/nssdb' certPrefix='' keyPrefix='' secmod='secmod.db' flags="
    emit KEYWARD_HOME "$dir/home"
    emit KEYWARD_BED_INIT none
    emit KEYWARD_BED_TOKEN "NSS Certificate DB"
    emit KEYWARD_BED_PIN "$BED_PIN"
    # No SO exists; an SO PIN is given anyway so that `token init` is refused for what the
    # token lacks, not for a missing secret.
    emit KEYWARD_BED_SO_PIN "$BED_SO_PIN"
}

case ${1:-} in
up) up "${2:?usage: nss.sh up DIR}" ;;
down) : ;;
*) die "usage: nss.sh up DIR | down DIR" ;;
esac
