#!/usr/bin/env bash
# opencryptoki's soft token (slot 3) as a keyward test bed (interface: testbeds/lib.sh):
#   testbeds/opencryptoki.sh up DIR | down DIR
# opencryptoki is system-wide: one pkcsslotd per machine, its token store fixed at
# /var/lib/opencryptoki/swtok. So `up` takes a machine-wide lock (a second bed waits for the
# first one's `down`), refuses to run beside a pkcsslotd it did not start, saves the soft token
# store in DIR and starts from an empty one; `down` stops pkcsslotd and puts the store back.
# The token: label "ock-card", SO PIN 87654321 (a fresh soft token's), user PIN from lib.sh.
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"

lock=/run/lock/keyward-opencryptoki.bed
store=/var/lib/opencryptoki/swtok
label=ock-card

take_lock() {
    local dir=$1 owner waited=0
    mkdir -p "$(dirname "$lock")"
    until mkdir "$lock" 2>/dev/null; do
        owner=$(cat "$lock/owner" 2>/dev/null || true)
        if [[ -n $owner && ! -d $owner ]]; then
            # Its bed is gone without `down`: a crashed run. Take the lock over.
            rm -rf "$lock"
            continue
        fi
        ((waited++ < 1800)) || die "another opencryptoki bed ($owner) has held $lock for 15 minutes; run testbeds/opencryptoki.sh down $owner"
        sleep 0.5
    done
    echo "$dir" > "$lock/owner"
}

up() {
    local dir module running
    dir=$(cd "$1" 2>/dev/null && pwd) || { mkdir -p "$1" && dir=$(cd "$1" && pwd); }
    [[ $(id -u) -eq 0 ]] ||
        die "needs root: it starts pkcsslotd and resets the machine's soft token store; run as root, or leave opencryptoki out of KEYWARD_TEST_MODULES"
    need pkcsslotd opencryptoki opencryptoki
    need pkcsconf opencryptoki opencryptoki
    module=$(first_file /usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so \
        /usr/lib/x86_64-linux-gnu/opencryptoki/libopencryptoki.so /usr/lib/aarch64-linux-gnu/pkcs11/libopencryptoki.so)
    [[ -n $module ]] || die "libopencryptoki.so is missing: run KEYWARD_TEST_MODULES=opencryptoki bash testbeds/setup.sh"
    [[ -d $store ]] || die "$store is missing: run KEYWARD_TEST_MODULES=opencryptoki bash testbeds/setup.sh (apt-get install opencryptoki)"
    take_lock "$dir"
    running=$(pgrep -x pkcsslotd || true)
    if [[ -n $running ]]; then
        rm -rf "$lock"
        die "pkcsslotd already runs (PID $running), not started by a test bed: another user of opencryptoki on this machine; stop it (or wait for it) and run again"
    fi
    mkdir -p "$dir/home"
    # Keep the machine's soft token; start from an empty one.
    tar -C "$(dirname "$store")" -cf "$dir/swtok-saved.tar" swtok
    find "$store" -mindepth 1 -delete
    install -d -m 0770 -g pkcs11 "$store/TOK_OBJ"
    rm -f /dev/shm/var.lib.opencryptoki.swtok
    /usr/sbin/pkcsslotd
    for _ in $(seq 50); do
        [[ -s /var/run/pkcsslotd.pid ]] && break
        sleep 0.1
    done
    [[ -s /var/run/pkcsslotd.pid ]] || die "pkcsslotd did not start; see journalctl or /var/log/opencryptoki"
    cp /var/run/pkcsslotd.pid "$dir/pkcsslotd.pid"
    # A fresh soft token's SO PIN is 87654321; pkcsconf asks for the label on stdin.
    printf '%s\n' "$label" | pkcsconf -c 3 -I -S "$BED_SO_PIN" >&2
    pkcsconf -c 3 -u -S "$BED_SO_PIN" -n "$BED_PIN" >&2
    emit KEYWARD_MODULE "$module"
    emit KEYWARD_HOME "$dir/home"
    emit KEYWARD_BED_INIT none
    emit KEYWARD_BED_TOKEN "$label"
    emit KEYWARD_BED_PIN "$BED_PIN"
    emit KEYWARD_BED_SO_PIN "$BED_SO_PIN"
}

down() {
    local dir
    dir=$(cd "$1" 2>/dev/null && pwd) || return 0
    [[ -e $dir/pkcsslotd.pid ]] && stop_pidfile "$dir/pkcsslotd.pid"
    if [[ -s $dir/swtok-saved.tar ]]; then
        find "$store" -mindepth 1 -delete
        tar -C "$(dirname "$store")" -xpf "$dir/swtok-saved.tar"
        rm -f "$dir/swtok-saved.tar" /dev/shm/var.lib.opencryptoki.swtok
    fi
    if [[ $(cat "$lock/owner" 2>/dev/null) == "$dir" ]]; then
        rm -rf "$lock"
    fi
}

case ${1:-} in
up) up "${2:?usage: opencryptoki.sh up DIR}" ;;
down) down "${2:?usage: opencryptoki.sh down DIR}" ;;
*) die "usage: opencryptoki.sh up DIR | down DIR" ;;
esac
