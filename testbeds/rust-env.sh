# Sourced by test-all.sh and main-job.sh after setup.sh: puts the toolchain rustup installed
# (CARGO_HOME, default ~/.cargo) on PATH when cargo is not on it already.
if ! command -v cargo >/dev/null && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
    echo "testbeds: cargo is missing and setup.sh could not install it; install Rust (https://rustup.rs) and run again" >&2
    exit 1
fi
