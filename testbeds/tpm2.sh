#!/usr/bin/env bash
# tpm2-pkcs11 over a software TPM (swtpm) as a keyward test bed (interface: testbeds/lib.sh):
#   testbeds/tpm2.sh up DIR | down DIR
# swtpm listens on 127.0.0.1 (a free port and the next one, for its control channel) with its
# state in DIR; the tpm2-pkcs11 store is DIR/store. keyward initialises tokens in the free slot
# (tpm2-pkcs11 offers a new empty one after each initialisation).
#   testbeds/tpm2.sh settle DIR   (with the bed's variables) flushes what the last command left
#                                 loaded in the TPM. swtpm over TCP has no resource manager; on a
#                                 real system the kernel's /dev/tpmrm0 (or tpm2-abrmd) does this
#                                 when a process exits. Without it one failed command leaves
#                                 objects loaded and every later one fails with "out of memory
#                                 for object contexts". The bed says so with KEYWARD_BED_SETTLE=1.
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"

up() {
    local dir module port tcti
    dir=$(mkdir -p "$1" && cd "$1" && pwd)
    need swtpm swtpm tpm2
    need tpm2_ptool libtpm2-pkcs11-tools tpm2
    need tpm2_flushcontext tpm2-tools tpm2
    module=$(first_file /usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so \
        /usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so)
    [[ -n $module ]] || die "libtpm2_pkcs11.so is missing: run KEYWARD_TEST_MODULES=tpm2 bash testbeds/setup.sh (apt-get install libtpm2-pkcs11-1)"
    mkdir -p "$dir/tpm" "$dir/store" "$dir/home"
    port=$(free_port)
    swtpm socket --tpm2 --tpmstate "dir=$dir/tpm" \
        --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
        --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
        --flags not-need-init,startup-clear --daemon --pid "file=$dir/swtpm.pid" \
        --log "file=$dir/swtpm.log" >&2
    tcti="swtpm:host=127.0.0.1,port=$port"
    export TPM2TOOLS_TCTI=$tcti TPM2_PKCS11_TCTI=$tcti TPM2_PKCS11_STORE=$dir/store
    for _ in $(seq 50); do
        tpm2_getrandom 1 >/dev/null 2>&1 && break
        sleep 0.1
    done
    tpm2_ptool init --path="$dir/store" >&2
    # No resource manager: flush what tpm2_ptool left loaded, or later calls run out of handles.
    tpm2_flushcontext -t >&2
    tpm2_flushcontext -s >&2
    emit KEYWARD_MODULE "$module"
    emit TPM2_PKCS11_TCTI "$tcti"
    emit TPM2TOOLS_TCTI "$tcti"
    emit TPM2_PKCS11_STORE "$dir/store"
    emit TPM2_PKCS11_LOG_LEVEL 0
    emit KEYWARD_HOME "$dir/home"
    emit KEYWARD_BED_INIT free
    emit KEYWARD_BED_SETTLE 1
    emit KEYWARD_BED_PIN "$BED_PIN"
    emit KEYWARD_BED_SO_PIN "$BED_SO_PIN"
}

settle() {
    [[ -n ${TPM2TOOLS_TCTI:-} ]] || die "settle needs the bed's variables (TPM2TOOLS_TCTI)"
    tpm2_flushcontext -t >&2
    tpm2_flushcontext -s >&2
}

down() {
    [[ -d $1 ]] || return 0
    stop_pidfile "$1/swtpm.pid"
}

case ${1:-} in
up) up "${2:?usage: tpm2.sh up DIR}" ;;
down) down "${2:?usage: tpm2.sh down DIR}" ;;
settle) settle ;;
*) die "usage: tpm2.sh up DIR | down DIR | settle DIR" ;;
esac
