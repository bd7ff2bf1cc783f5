#!/usr/bin/env bash
# Makes a throw-away SoftHSM2 token directory and prints the exports that use it:
#   eval "$(bash testbeds/testbed.sh /tmp/some-dir)"
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$(mktemp -d -t keyward-softhsm.XXXXXX)}
mkdir -p "$dir/tokens" "$dir/home"
sed "s|@TOKENDIR@|$dir/tokens|" "$here/softhsm2.conf.in" > "$dir/softhsm2.conf"
echo "export SOFTHSM2_CONF='$dir/softhsm2.conf' KEYWARD_HOME='$dir/home'"
