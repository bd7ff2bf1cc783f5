#!/usr/bin/env bash
# kryoptic 1.5.4 (a PKCS#11 soft token in Rust) as a keyward test bed (interface: testbeds/lib.sh):
#   testbeds/kryoptic.sh build     builds the module from its crates.io source, once; cached in
#                                  ${XDG_CACHE_HOME:-~/.cache}/keyward/kryoptic-1.5.4/
#   testbeds/kryoptic.sh up DIR    four empty slots (SQLite files in DIR) for keyward to initialise
#   testbeds/kryoptic.sh down DIR  nothing to stop: kryoptic runs inside keyward
#   testbeds/kryoptic.sh module    prints the module's path
# Debian 12 has OpenSSL 3.0; kryoptic's default features need 3.2, so it is built with
# --no-default-features --features minimal,kryoptic-lib/dynamic (links the system libcrypto).
# KEYWARD_KRYOPTIC_PUBLISH=PATH: also symlink the built module to PATH (a shared cache).
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"

version=1.5.4
cache=${XDG_CACHE_HOME:-$HOME/.cache}/keyward/kryoptic-$version
module=$cache/libkryoptic_pkcs11.so

build() {
    if [[ -s $module ]]; then
        publish
        return
    fi
    need cargo "rustup (https://rustup.rs)" kryoptic
    need clang "clang libclang-dev" kryoptic
    need pkg-config pkg-config kryoptic
    [[ -e /usr/include/openssl/evp.h ]] || need missing-openssl-headers libssl-dev kryoptic
    mkdir -p "$cache"
    local work=$cache/build src
    rm -rf "$work"
    mkdir -p "$work"
    echo "kryoptic.sh: building kryoptic $version from crates.io (a few minutes, once; cached in $cache)" >&2
    # The published source, fetched by cargo (checked against the registry index's checksum).
    (
        cd "$work"
        cargo new --quiet --vcs none fetcher
        cd fetcher
        cargo add --quiet "kryoptic@=$version"
        cargo fetch --quiet
    )
    src=$(cd "$work/fetcher" && cargo metadata --format-version 1 --quiet |
        python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="kryoptic"))')
    # Build a copy: cargo's registry sources are shared and must stay untouched.
    cp -a "$(dirname "$src")" "$work/kryoptic-$version"
    (
        cd "$work/kryoptic-$version"
        CARGO_TARGET_DIR="$work/target" cargo build --release --no-default-features \
            --features minimal,kryoptic-lib/dynamic
    )
    cp "$work/target/release/libkryoptic_pkcs11.so" "$module.tmp"
    mv "$module.tmp" "$module"
    rm -rf "$work"
    publish
}

publish() {
    if [[ -n ${KEYWARD_KRYOPTIC_PUBLISH:-} ]]; then
        mkdir -p "$(dirname "$KEYWARD_KRYOPTIC_PUBLISH")"
        ln -sf "$module" "$KEYWARD_KRYOPTIC_PUBLISH"
    fi
}

up() {
    local dir=$1 slot
    [[ -s $module ]] || build >&2
    mkdir -p "$dir/home"
    {
        printf '[ec_point_encoding]\nencoding = "Der"\n'
        for slot in 1 2 3 4 5; do
            printf '\n[[slots]]\nslot = %d\ndbtype = "sqlite"\ndbargs = "%s"\n' "$slot" "$dir/token$slot.sql"
        done
    } > "$dir/kryoptic.conf"
    emit KEYWARD_MODULE "$module"
    emit KRYOPTIC_CONF "$dir/kryoptic.conf"
    emit KEYWARD_HOME "$dir/home"
    emit KEYWARD_BED_INIT free
    emit KEYWARD_BED_PIN "$BED_PIN"
    emit KEYWARD_BED_SO_PIN "$BED_SO_PIN"
}

case ${1:-} in
build) build ;;
up) up "${2:?usage: kryoptic.sh up DIR}" ;;
down) : ;;
module) echo "$module" ;;
*) die "usage: kryoptic.sh build | up DIR | down DIR | module" ;;
esac
