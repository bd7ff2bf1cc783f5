#!/usr/bin/env bash
# keyward's main job, start to end, on a throw-away SoftHSM2 token directory:
# an admin provisions tokens, a user creates a keyset and signs with it, forgets and
# changes passwords, and the admin unblocks a PIN. Every command is printed before it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash softhsm/setup.sh
cargo build --quiet --locked --bin keyward
KW=$PWD/target/debug/keyward

work=$(mktemp -d -t keyward-main-job.XXXXXX)
trap 'rm -rf "$work"' EXIT
eval "$(bash softhsm/testbed.sh "$work")"
export SOFTHSM2_CONF KEYWARD_HOME
# Secrets come from files here (never from argv); a person would type them at the prompts.
secret() { printf '%s\n' "$2" > "$work/$1"; chmod 600 "$work/$1"; echo "$work/$1"; }
SO=$(secret so-pin 'admin-so-pin-1')
ALICE=$(secret alice-pin 'alice-pin-1')
ALICE2=$(secret alice-pin-2 'alice-pin-2')

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ keyward'; printf ' %q' "$@"; printf '\n'; "$KW" "$@"; }

step "Admin: the slots and tokens on a fresh SoftHSM"
run token list
step "Admin: provision Alice's token (SO PIN and first user PIN from files)"
run token init --free --label alice-card --so-pin-file "$SO" --new-pin-file "$ALICE"
run token info --token alice-card

step "Alice: create a keyset on her token (signing key generated on the token)"
run keyset create "Alice Smith 2026" --token alice-card --pin-file "$ALICE"
run keyset show "Alice Smith 2026"

step "Alice: sign a file; anyone can verify it, OpenSSL too"
echo "Quarterly report: all keys accounted for." > "$work/report.txt"
run keyset sign "Alice Smith 2026" "$work/report.txt" -o "$work/report.sig" --pin-file "$ALICE"
run keyset verify "Alice Smith 2026" "$work/report.txt" "$work/report.sig"
"$KW" keyset pubkey "Alice Smith 2026" > "$work/alice.pub.pem"
printf '$ openssl dgst -sha256 -verify alice.pub.pem -signature report.sig report.txt\n'
openssl dgst -sha256 -verify "$work/alice.pub.pem" -signature "$work/report.sig" "$work/report.txt"

step "Alice: a high-security keyset: the password for every signature"
run keyset create "Alice High 2026" --token alice-card --security high --pin-file "$ALICE"
run keyset sign "Alice High 2026" "$work/report.txt" -o "$work/report-high.sig" --pin-file "$ALICE"

step "Alice: change her password (the token PIN, shared by both keysets)"
run keyset passwd "Alice Smith 2026" --pin-file "$ALICE" --new-pin-file "$ALICE2"

step "Alice: forgets it and types a wrong one — keyward says so and never retries"
WRONG=$(secret wrong 'not-my-pin')
run keyset sign "Alice Smith 2026" "$work/report.txt" -o "$work/x.sig" --pin-file "$WRONG" || true

step "Admin: unblock Alice's token with the SO PIN and give her a new PIN"
ALICE3=$(secret alice-pin-3 'alice-pin-3')
run token unblock --token alice-card --so-pin-file "$SO" --new-pin-file "$ALICE3"
run keyset sign "Alice Smith 2026" "$work/report.txt" -o "$work/report2.sig" --pin-file "$ALICE3"
run keyset list

printf '\nmain job done: every step above ran against a real SoftHSM2 token in %s (now removed).\n' "$work"
