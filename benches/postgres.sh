#!/usr/bin/env bash
# `authority process` commands per second (issue 16): one node against two nodes at once, the
# state in SQLite against PostgreSQL. Throw-away SoftHSM and PostgreSQL (testbeds/postgres.sh,
# on a Unix socket, stopped at the end). N requests per case (P-256, made beforehand on a user
# token); "two nodes" runs two streams of N/2 at once: on SQLite, two processes on the one
# directory (each with its own SoftHSM configuration, so they do not take turns on SoftHSM's
# lock); on PostgreSQL, node 1 and node 2 (`authority join`, each with its own copy of the token
# directory). Prints wall time, commands per second and the ratio two/one.
# Then EST (EST=0 skips it): N whole enrollments over HTTPS (curl + openssl: a P-256
# simpleenroll, then an RSA serverkeygen), C at a time, against `authority serve` on node 1
# alone and on node 1 and node 2 at once (clients alternate): enrollments/s, p50/p99 and two/one.
# PROFILE=debug uses the dev build; KEYWARD=PATH a given binary (built elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-16}
EST=${EST:-1}
PROCESS=${PROCESS:-1}
EN=${EN:-40}
C=${C:-8}
PROFILE=${PROFILE:-release}
if [[ -n ${KEYWARD:-} ]]; then
    K=$KEYWARD
elif [[ $PROFILE == release ]]; then
    cargo build --quiet --release --bin keyward
    K=$PWD/target/release/keyward
else
    cargo build --quiet --bin keyward
    K=$PWD/target/debug/keyward
fi
PG=$PWD/testbeds/postgres.sh
work=$(mktemp -d /tmp/keyward-pg-bench.XXXXXX)
chmod 0711 "$work"
nodes=()
cleanup() {
    local p
    for p in "${nodes[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    bash "$PG" stop "$work/pg" || true
    rm -rf "$work"
}
trap cleanup EXIT
eval "$(bash testbeds/testbed.sh "$work/one")"
export SOFTHSM2_CONF KEYWARD_HOME KEYWARD_SO_PIN=so-pin-1 KEYWARD_PIN=user-pin-1 KEYWARD_AUTHORITY_PIN=user-pin-1
url=$(bash "$PG" start "$work/pg" $$)
pw=$work/pg/password
cd "$work"
for t in auth-sqlite auth-pg user; do KEYWARD_NEW_PIN=user-pin-1 "$K" token init --free --label "$t" >/dev/null; done
"$K" authority init --dir sqlite --token auth-sqlite >/dev/null
"$K" authority init --dir pg1 --token auth-pg --db "$url" --db-password-file "$pw" >/dev/null
# A second SoftHSM configuration: the same tokens (SQLite's second stream) …
cp "$SOFTHSM2_CONF" "$work/same-tokens.conf"
# … and node 2's copy of the token directory.
mkdir -p "$work/two/tokens"
cp -a "$work/one/tokens/." "$work/two/tokens/"
sed "s|$work/one/tokens|$work/two/tokens|" "$SOFTHSM2_CONF" > "$work/two.conf"
SOFTHSM2_CONF=$work/two.conf "$K" authority join --dir pg2 --token auth-pg --db "$url" --db-password-file "$pw" >/dev/null
for a in sqlite pg1; do "$K" authority cert --dir "$a" > "$a.pem"; done
conf_one=$SOFTHSM2_CONF
now() { date +%s%N; }

requests() { # AUTHORITY-DIR BUNDLE PREFIX
    local i
    for i in $(seq "$N"); do
        "$K" authority add-user --dir "$1" "$3$i" > "$3$i.key" 2>/dev/null
        KEYWARD_TEMP_KEY="$(cat "$3$i.key")" "$K" enroll --user "$3$i" --keyset "$3$i" \
            --token user --key-type p256 --authority-cert "$2" -o "$3$i.req" >/dev/null 2>&1
    done
}
if [[ $PROCESS == 1 ]]; then
requests sqlite sqlite.pem s1-
requests sqlite sqlite.pem s2-
requests pg1 pg1.pem p1-
requests pg1 pg1.pem p2-

stream() { # CONF DIR PREFIX FROM TO
    local i
    for i in $(seq "$4" "$5"); do
        SOFTHSM2_CONF=$1 "$K" authority process --dir "$2" "$3$i.req" -o "$3$i.$2.reply" >/dev/null 2>>errors.log || echo "failed: $3$i on $2" >&2
    done
}
declare -A secs
run_case() { # NAME then streams as "CONF DIR PREFIX FROM TO" strings
    local name=$1 s e pids=()
    shift
    s=$(now)
    for st in "$@"; do
        # shellcheck disable=SC2086
        stream $st &
        pids+=($!)
    done
    wait "${pids[@]}"
    e=$(now)
    secs[$name]=$(( (e - s) / 1000000 ))
}
half=$((N / 2))
run_case sqlite-1 "$SOFTHSM2_CONF sqlite s1- 1 $N"
run_case sqlite-2 "$SOFTHSM2_CONF sqlite s2- 1 $half" "$work/same-tokens.conf sqlite s2- $((half + 1)) $N"
run_case pg-1 "$SOFTHSM2_CONF pg1 p1- 1 $N"
run_case pg-2 "$SOFTHSM2_CONF pg1 p2- 1 $half" "$work/two.conf pg2 p2- $((half + 1)) $N"
for a in sqlite pg1 pg2; do
    [[ $a == pg2 ]] && export SOFTHSM2_CONF=$work/two.conf
    "$K" authority log --dir "$a" --verify >/dev/null
done

printf '%-10s %-8s %10s %12s\n' store nodes "wall (ms)" "process/s"
for c in sqlite-1 sqlite-2 pg-1 pg-2; do
    printf '%-10s %-8s %10s %12s\n' "${c%-*}" "${c#*-}" "${secs[$c]}" \
        "$(awk -v n="$N" -v ms="${secs[$c]}" 'BEGIN { printf "%.2f", n * 1000 / ms }')"
done
for s in sqlite pg; do
    awk -v a="${secs[$s-1]}" -v b="${secs[$s-2]}" -v s="$s" 'BEGIN { printf "%s: two streams / one = %.2fx\n", s, a / b }'
done
echo "($N requests per case, $PROFILE build, $(nproc) cores)"
fi
export SOFTHSM2_CONF=$conf_one

[[ $EST == 1 ]] || exit 0

# ---- EST: one node against two ----
{ for i in $(seq "$EN"); do echo "a$i,a$i@example.org"; echo "b$i,b$i@example.org"; done; } > est-users.csv
"$K" authority add-users --dir pg1 --from est-users.csv --out est-keys >/dev/null
sed -n '1,/END CERTIFICATE/p' pg1.pem > est-ca.pem
mkdir -p est
openssl req -new -nodes -newkey rsa:2048 -keyout est/t.key -subj /CN=t -outform DER 2>/dev/null |
    openssl base64 > est/t.b64
for p in a b; do
    for i in $(seq "$EN"); do
        openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "est/$p$i.key" \
            -subj "/CN=$p$i" -outform DER 2>/dev/null | openssl base64 > "est/$p$i.b64"
        printf 'user = "%s:%s"\n' "$p$i" "$(tr -d '\n' < "est-keys/$p$i.tempkey")" > "est/$p$i.curl"
    done
done
serve() { # CONF DIR TAG: starts a node (in this shell, so that it is stopped at the end)
    rm -f "ready-$3"
    SOFTHSM2_CONF=$1 RUST_LOG=keyward::est::node=info "$K" authority serve --dir "$2" \
        --listen 127.0.0.1:0 --ready-file "ready-$3" >/dev/null 2>"serve-$3.log" &
    nodes+=($!)
    local _
    for _ in $(seq 600); do [[ -s ready-$3 ]] && break; sleep 0.1; done
    [[ -s ready-$3 ]] || { echo "node $3 did not start:" >&2; cat "serve-$3.log" >&2; exit 1; }
}
node_cpu() { # the CPU seconds the running nodes used (user + system), summed
    local p t=0
    for p in "${nodes[@]}"; do t=$((t + $(ps -o times= -p "$p" 2>/dev/null || echo 0))); done
    echo "$t"
}
stop_nodes() {
    kill "${nodes[@]}" 2>/dev/null || true
    wait "${nodes[@]}" 2>/dev/null || true
    nodes=()
}
est_one() { # USER ADDR → latency in ms
    local s e
    s=$(date +%s%N)
    local a b
    a=$(curl -s --cacert est-ca.pem -K "est/$1.curl" -H 'Content-Type: application/pkcs10' \
        --data-binary "@est/$1.b64" "https://$2/.well-known/est/simpleenroll" -o "est/$1.p7" -w '%{http_code}')
    b=$(curl -s --cacert est-ca.pem -K "est/$1.curl" -H 'Content-Type: application/pkcs10' \
        --data-binary "@est/t.b64" "https://$2/.well-known/est/serverkeygen" -o "est/$1.mp" -w '%{http_code}')
    [[ $a == 200 && $b == 200 ]] ||
        { echo "FAIL $1 on $2: simpleenroll $a, serverkeygen $b: $(head -c 300 "est/$1.mp")" >&2; return 1; }
    e=$(date +%s%N)
    echo $(( (e - s) / 1000000 ))
}
export -f est_one
est_case() { # NAME PREFIX ADDR... → wall ms; latencies in NAME.lat
    local name=$1 prefix=$2 s
    shift 2
    local addrs=("$@")
    s=$(now)
    for i in $(seq "$EN"); do echo "$prefix$i ${addrs[$(( i % ${#addrs[@]} ))]}"; done |
        xargs -P "$C" -L 1 bash -c 'est_one "$0" "$1"' > "$name.lat"
    echo $(( ($(now) - s) / 1000000 ))
}
pct() { sort -n "$1" | awk -v p="$2" '{a[NR]=$1} END {i=int(NR*p/100+0.999); if(i<1)i=1; print a[i]}'; }
load0=$(cut -d' ' -f1 /proc/loadavg)
lock_ms() { # the ms granted requests held the authority's lock, from the nodes' logs
    cat "$@" | sed -n "s/.* \([0-9]*\) ms of it holding the authority's lock.*/\1/p" |
        awk '{t += $1} END {print t + 0}'
}
serve "$conf_one" pg1 one
one_ms=$(est_case est-1 a "$(cat ready-one)")
one_lock=$(lock_ms serve-one.log)
one_cpu=$(node_cpu)
stop_nodes
serve "$conf_one" pg1 one
serve "$work/two.conf" pg2 two
two_ms=$(est_case est-2 b "$(cat ready-one)" "$(cat ready-two)")
two_cpu=$(node_cpu)
two_lock=$(lock_ms serve-one.log serve-two.log)
load1=$(cut -d' ' -f1 /proc/loadavg)
stop_nodes
"$K" authority log --dir pg1 --verify >/dev/null
printf '\nEST over PostgreSQL (%s build, %d cores, %d enrollments, %d at a time)\n\n' "$PROFILE" "$(nproc)" "$EN" "$C"
printf '| nodes | ok | wall ms | enrollments/s | p50 ms | p99 ms | node CPU s per enrollment | lock held, ms per enrollment |\n|---|---|---|---|---|---|---|---|\n'
for c in 1 2; do
    ms=$one_ms; cpu=$one_cpu; lk=$one_lock; [[ $c == 2 ]] && { ms=$two_ms; cpu=$two_cpu; lk=$two_lock; }
    ok=$(grep -c '^[0-9]' "est-$c.lat" || true)
    printf '| %d | %d | %d | %s | %s | %s | %s | %s |\n' "$c" "$ok" "$ms" \
        "$(awk -v n="$ok" -v ms="$ms" 'BEGIN {printf "%.2f", n * 1000 / ms}')" \
        "$(pct "est-$c.lat" 50)" "$(pct "est-$c.lat" 99)" \
        "$(awk -v c="$cpu" -v n="$ok" 'BEGIN {printf "%.2f", c / (n ? n : 1)}')" \
        "$(awk -v l="$lk" -v n="$ok" 'BEGIN {printf "%d", l / (n ? n : 1)}')"
done
echo "load average: $load0 before, $load1 after"
echo "(the lock is one for all nodes: enrollments/s cannot pass 1000 / (lock ms per enrollment))"
awk -v a="$one_ms" -v b="$two_ms" -v na="$(wc -l < est-1.lat)" -v nb="$(wc -l < est-2.lat)" \
    'BEGIN { printf "EST: two nodes / one = %.2fx\n", (nb / b) / (na / a) }'
