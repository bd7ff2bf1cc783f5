#!/usr/bin/env bash
# SoftHSM2 as a keyward test bed (the interface is described in testbeds/lib.sh):
#   testbeds/softhsm.sh up DIR | down DIR
# keyward initialises its tokens in free slots (SoftHSM always offers one).
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"

up() {
    local dir=$1 module
    module=$(first_file /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
        /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so)
    [[ -n $module ]] || die "SoftHSM2 is missing: run KEYWARD_TEST_MODULES=softhsm bash testbeds/setup.sh (apt-get install softhsm2)"
    mkdir -p "$dir/tokens" "$dir/home"
    sed "s|@TOKENDIR@|$dir/tokens|" "$here/softhsm2.conf.in" > "$dir/softhsm2.conf"
    emit KEYWARD_MODULE "$module"
    emit SOFTHSM2_CONF "$dir/softhsm2.conf"
    emit KEYWARD_HOME "$dir/home"
    emit KEYWARD_BED_INIT free
    emit KEYWARD_BED_PIN "$BED_PIN"
    emit KEYWARD_BED_SO_PIN "$BED_SO_PIN"
}

case ${1:-} in
up) up "${2:?usage: softhsm.sh up DIR}" ;;
down) : ;;
*) die "usage: softhsm.sh up DIR | down DIR" ;;
esac
