#!/usr/bin/env bash
# keyward's main job: the whole Exchange "Advanced Security" story on a throw-away SoftHSM2
# token directory. An admin provisions three tokens, the authority is created, Alice and Bob
# enroll, Alice signs a file, a CI keyset is created on a fourth token without an authority
# (P-256, PIN derived from a password) and signs, Alice sends Bob a message, Bob reads it, Bob forgets his password, the
# authority recovers him, Bob re-enrolls under a new keyset name on a re-initialised token and
# reads Alice's old message again. Alice renews her keyset with its password (same name, new
# certificates, old mail still reads), reports her token lost (certificates on hold) and finds
# it again (off hold). Then three operators, each on their own token, take over: recovering
# Alice needs 2 of the 3. Every command is printed before it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash testbeds/setup.sh
. testbeds/rust-env.sh
cargo build --quiet --locked --bin keyward
KW=$PWD/target/debug/keyward

work=$(mktemp -d -t keyward-main-job.XXXXXX)
trap 'rm -rf "$work"' EXIT
eval "$(bash testbeds/testbed.sh "$work")"
export SOFTHSM2_CONF KEYWARD_HOME
AUTH="$work/authority"
cd "$work"
umask 077   # temporary keys and PINs written here stay private (keyward warns otherwise)

if [[ -t 1 ]]; then B=$'\033[1m'; N=$'\033[0m'; else B=; N=; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
run() { { printf '$ keyward'; printf ' %q' "$@"; printf '\n'; } >&2; "$KW" "$@"; }
# Secrets come from files here (never from argv); a person would type them at the prompts.
secret() { printf '%s\n' "$2" > "$work/$1"; chmod 600 "$work/$1"; }
secret so.pin 'admin-so-pin-1'
secret authority.pin 'authority-pin-1'
secret alice.pin 'alice-pin-1'
secret bob.pin 'bob-pin-1'
secret bob-new.pin 'bob-new-pin-2'

step "Admin: a fresh SoftHSM with one free slot"
run token list
step "Admin: provision three tokens (SO PIN and first user PIN from files)"
run token init --free --label authority --so-pin-file so.pin --new-pin-file authority.pin
run token init --free --label alice-card --so-pin-file so.pin --new-pin-file alice.pin
run token init --free --label bob-card --so-pin-file so.pin --new-pin-file bob.pin
run token list

step "Authority: create the authority (CA, exchange and archive keys on its own token)"
run authority init --dir "$AUTH" --token authority --name "CN=Example Key Authority,O=Example" --pin-file authority.pin
run authority cert --dir "$AUTH" > authority-certs.pem
echo "(authority-certs.pem is what users enroll against)"

step "Authority: add Alice and Bob; each gets a one-time temporary key"
run authority add-user --dir "$AUTH" alice --email alice@example.org --pin-file authority.pin > alice.tempkey
run authority add-user --dir "$AUTH" bob --email bob@example.org --pin-file authority.pin > bob.tempkey
echo "alice's temporary key: $(cat alice.tempkey)   bob's: $(cat bob.tempkey)"

step "Alice: enroll with a local authority in one command (keyset 'Alice 2026', security high)"
run enroll --user alice --keyset "Alice 2026" --token alice-card --security high --authority "$AUTH" \
    --temp-key-file alice.tempkey --pin-file alice.pin --authority-pin-file authority.pin

step "Bob: enroll the Exchange way — a request file to the authority, a reply back"
run enroll --user bob --keyset "Bob 2026" --token bob-card --authority-cert authority-certs.pem -o bob.request \
    --temp-key-file bob.tempkey --pin-file bob.pin
run authority process --dir "$AUTH" bob.request -o bob.reply --pin-file authority.pin
run enroll --complete bob.reply --pin-file bob.pin
run keyset list
run authority users --dir "$AUTH"

step "Alice: sign a file with her token key; OpenSSL verifies it too"
echo "Quarterly report: all keys accounted for." > report.txt
run keyset sign "Alice 2026" report.txt -o report.sig --pin-file alice.pin
"$KW" keyset pubkey "Alice 2026" > alice.pub.pem
printf '$ openssl dgst -sha256 -verify alice.pub.pem -signature report.sig report.txt\n'
openssl dgst -sha256 -verify alice.pub.pem -signature report.sig report.txt

step "CI: a keyset of its own, no authority: P-256 on a software token, PIN derived from a password"
secret ci.pin 'ci-initial-pin-1'
secret ci.password 'ci pipeline passphrase 2026'
run token init --free --label ci-token --so-pin-file so.pin --new-pin-file ci.pin
run keyset create "CI signing" --token ci-token --key-type p256 --harden --pin-file ci.pin --new-pin-file ci.password
run keyset show "CI signing"
run keyset sign "CI signing" report.txt -o report.ci.sig --pin-file ci.password
run keyset verify "CI signing" report.txt report.ci.sig
"$KW" keyset pubkey "CI signing" > ci.pub.pem
printf '$ openssl dgst -sha256 -verify ci.pub.pem -signature report.ci.sig report.txt\n'
openssl dgst -sha256 -verify ci.pub.pem -signature report.ci.sig report.txt
(umask 077; run keyset pin "CI signing" --pin-file ci.password > ci.derived.pin)
echo "(the derived token PIN, for pkcs11-tool and other tools, is in ci.derived.pin, mode 600)"

if true; then
    step "Alice: send Bob a signed and encrypted message"
    echo "Bob, the launch code is in the safe. — Alice" > letter.txt
    run send --keyset "Alice 2026" --to "Bob 2026" letter.txt -o letter.p7m --pin-file alice.pin
    step "Bob: read it"
    run read --keyset "Bob 2026" letter.p7m --pin-file bob.pin
fi

step "Alice: renew 'Alice 2026' with its password — same name, new keys and certificates; her old mail still reads"
run enroll --renew "Alice 2026" --authority "$AUTH" --pin-file alice.pin --authority-pin-file authority.pin
run keyset show "Alice 2026"
run read --keyset "Alice 2026" letter.p7m --pin-file alice.pin
run authority users --dir "$AUTH" --expiring 30d

step "Authority: Alice reports her token lost — its certificates go on hold; then she finds it"
run authority token --dir "$AUTH" alice --state lost --pin-file authority.pin > alice-loaner.tempkey
run authority crl --dir "$AUTH" -o lost.crl --pin-file authority.pin
printf '$ openssl crl -in lost.crl -noout -text | grep -c "Certificate Hold"\n'
openssl crl -in lost.crl -noout -text | grep -c "Certificate Hold"
run authority token --dir "$AUTH" alice --state found --pin-file authority.pin
run authority token --dir "$AUTH" alice
run authority crl --dir "$AUTH" -o found.crl --pin-file authority.pin

step "Bob: forgets his password; a wrong one is refused and keyward never retries on its own"
secret wrong.pin 'is-it-this-one'
run keyset sign "Bob 2026" report.txt -o bob.sig --pin-file wrong.pin || true

step "Authority: recover Bob — his certificates are revoked, he gets a new temporary key"
run authority recover --dir "$AUTH" bob --pin-file authority.pin > bob-recover.tempkey
run authority crl --dir "$AUTH" -o authority.crl --pin-file authority.pin

step "Admin: re-initialise Bob's token (new user PIN)"
run token init --token bob-card --label bob-card --force --so-pin-file so.pin --new-pin-file bob-new.pin

step "Bob: re-enroll under a NEW keyset name; the authority returns his archived encryption keys"
run enroll --user bob --keyset "Bob 2026 (recovered)" --token bob-card --authority "$AUTH" \
    --temp-key-file bob-recover.tempkey --pin-file bob-new.pin --authority-pin-file authority.pin
run keyset list

if true; then
    step "Bob: reads Alice's OLD message with the recovered keyset"
    run read --keyset "Bob 2026 (recovered)" letter.p7m --pin-file bob-new.pin
fi

step "Authority: three operators, each on their own token; from now on recovery needs 2 of 3"
secret carol.pin 'carol-op-pin-1'
secret dave.pin 'dave-op-pin-1'
secret erin.pin 'erin-op-pin-1'
for op in carol dave erin; do
    run token init --free --label "op-$op" --so-pin-file so.pin --new-pin-file "$op.pin"
done
# The first operator is added by the authority's PIN holder alone (no operators yet); each
# later one needs an operator's approval, signed on that operator's token.
run authority operator add --dir "$AUTH" carol --token op-carol --pin-file carol.pin --authority-pin-file authority.pin
run authority operator add --dir "$AUTH" dave --token op-dave --pin-file dave.pin --authority-pin-file authority.pin \
    --as carol --operator-pin-file carol.pin
run authority operator add --dir "$AUTH" erin --token op-erin --pin-file erin.pin --authority-pin-file authority.pin \
    --as carol --operator-pin-file carol.pin
run authority operator list --dir "$AUTH"
request_id() { sed -n 's/.*"request": *"\([0-9a-f]*\)".*/\1/p'; }
# Changing the policy needs more approvals than anything else (2 here): Carol asks, Dave agrees.
id=$(run --json authority policy set --dir "$AUTH" recover 2 --as carol --operator-pin-file carol.pin --authority-pin-file authority.pin | request_id)
run authority approve --dir "$AUTH" "$id" --as dave --operator-pin-file dave.pin --authority-pin-file authority.pin
run authority policy show --dir "$AUTH"

step "Authority: recover Alice with 2 of 3 operators — the PIN holder alone is refused"
run authority recover --dir "$AUTH" alice --authority-pin-file authority.pin || echo "(refused, as it should be)"
id=$(run --json authority recover --dir "$AUTH" alice --as carol --operator-pin-file carol.pin --authority-pin-file authority.pin | request_id)
run authority request list --dir "$AUTH"
run authority approve --dir "$AUTH" "$id" --as erin --operator-pin-file erin.pin --authority-pin-file authority.pin > alice-recover.tempkey
echo "alice's new temporary key (given to the last approver, Erin): $(cat alice-recover.tempkey)"
run authority request list --dir "$AUTH"
run authority users --dir "$AUTH"

step "Authority: the audit log, and its signed chain checked (and by an auditor: a copy and the CA certificate, no PIN)"
run authority log --dir "$AUTH"
run authority log --dir "$AUTH" --verify
mkdir audit-copy && sqlite3 "$AUTH/authority.db" ".backup audit-copy/authority.db"
run authority cert --dir "$AUTH" > ca-bundle.pem
run authority log --dir audit-copy --verify --ca ca-bundle.pem

printf '\nmain job done: every step ran against real SoftHSM2 tokens in %s (now removed).\n' "$work"
