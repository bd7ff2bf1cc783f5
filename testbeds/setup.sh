#!/usr/bin/env bash
# Installs what keyward's main job, tests and interop checks need, when it is missing:
# SoftHSM2 and the real PKCS#11 peers (OpenSC pkcs11-tool, GnuTLS p11tool, OpenSSL's
# PKCS#11 engine, ssh-keygen; sqlite3 for copying the authority database). Safe to run again: it installs nothing that is present.
set -euo pipefail

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in softhsm2 opensc gnutls-bin libengine-pkcs11-openssl openssl openssh-client sqlite3 ${KEYWARD_EXTRA_PACKAGES:-}; do
    have_pkg "$pkg" || need+=("$pkg")
done

if ((${#need[@]})); then
    echo "testbeds/setup.sh: installing ${need[*]}" >&2
    if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "testbeds/setup.sh: cargo is missing; install Rust (https://rustup.rs) and run again" >&2
    exit 1
fi
