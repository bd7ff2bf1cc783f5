#!/usr/bin/env bash
# Installs, in one apt-get step, what keyward's main job, tests and interop checks need, when it
# is missing: a C toolchain (build-essential: the linker, SQLite and ring are compiled),
# SoftHSM2 and the real PKCS#11 peers (OpenSC pkcs11-tool, GnuTLS p11tool, OpenSSL's
# PKCS#11 engine, ssh-keygen), pcscd + vsmartcard-vpcd for the virtual PIV card
# (testbeds/piv.sh), strace for the crash sweep (tests/crash_sweep.rs), sqlite3 for
# copying the authority database, curl as the EST client of tests/est.rs, python3-jsonschema for the JSON contract (tests/cli_contract.rs),
# and what each module of the module matrix needs
# (tests/module_matrix.rs; the beds are testbeds/<module>.sh). KEYWARD_TEST_MODULES (comma- or
# space-separated; default: all of softhsm,kryoptic,nss,opencryptoki,tpm2) limits the modules.
# Safe to run again: it installs nothing that is present.
set -euo pipefail

modules=${KEYWARD_TEST_MODULES:-softhsm,kryoptic,nss,opencryptoki,tpm2}
wanted=(build-essential ca-certificates softhsm2 opensc gnutls-bin libengine-pkcs11-openssl openssl openssh-client python3 python3-venv python3-jsonschema pcscd vsmartcard-vpcd libnss3-tools p11-kit-modules strace sqlite3 postgresql gpgsm gpg-agent dirmngr scdaemon gnupg-pkcs11-scd time curl ${KEYWARD_EXTRA_PACKAGES:-})
for module in ${modules//,/ }; do
    case $module in
    softhsm) ;;
    kryoptic) wanted+=(libssl-dev clang libclang-dev pkg-config) ;;
    nss) wanted+=(libnss3 libnss3-tools) ;;
    opencryptoki) wanted+=(opencryptoki) ;;
    tpm2) wanted+=(libtpm2-pkcs11-1 libtpm2-pkcs11-tools swtpm swtpm-tools tpm2-tools) ;;
    *)
        echo "testbeds/setup.sh: unknown module $module in KEYWARD_TEST_MODULES (softhsm, kryoptic, nss, opencryptoki, tpm2)" >&2
        exit 2
        ;;
    esac
done

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in "${wanted[@]}"; do
    have_pkg "$pkg" || need+=("$pkg")
done

if ((${#need[@]})); then
    echo "testbeds/setup.sh: installing ${need[*]}" >&2
    if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# pkilint (DigiCert's certificate and CRL linter: CA/B Forum S/MIME BR, RFC 5280) for
# tests/cert_profile.rs, from PyPI into a venv beside this script (KEYWARD_PKILINT_VENV to move it).
pkilint_venv=${KEYWARD_PKILINT_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/venv}
if [[ ! -x $pkilint_venv/bin/lint_cabf_smime_cert ]]; then
    echo "testbeds/setup.sh: installing pkilint into $pkilint_venv" >&2
    python=/usr/bin/python3
    [[ -x $python ]] || python=python3
    "$python" -m venv "$pkilint_venv"
    "$pkilint_venv/bin/pip" install -q --disable-pip-version-check 'pkilint==0.13.3'
fi

# Rust: a fresh Debian 12 has none (and its own rustc 1.63 is older than keyward's
# rust-version), so rustup installs Rust 1.95.0, the toolchain keyward is tested with (with
# clippy and rustfmt), under CARGO_HOME (~/.cargo); test-all.sh, main-job.sh and
# crash-sweep.sh put it on PATH (testbeds/rust-env.sh).
cargo_home=${CARGO_HOME:-$HOME/.cargo}
if ! command -v cargo >/dev/null && [[ ! -x $cargo_home/bin/cargo ]]; then
    echo "testbeds/setup.sh: installing Rust 1.95.0 (the toolchain keyward is tested with) with rustup into $cargo_home" >&2
    rustup_init=$(mktemp -t rustup-init.XXXXXX)
    trap 'rm -f "$rustup_init"' EXIT
    curl --proto '=https' --tlsv1.2 -sSfL -o "$rustup_init" \
        "https://static.rust-lang.org/rustup/dist/$(uname -m)-unknown-linux-gnu/rustup-init"
    chmod +x "$rustup_init"
    "$rustup_init" -y -q --no-modify-path --profile default --default-toolchain 1.95.0 >&2
fi
