#!/usr/bin/env bash
# bench/smoke.sh [HOTSOCK]: check that the benchmark tools work end to end:
# bench/run.sh --quick on tiny settings, against HOTSOCK (a built binary) or a
# fresh Release build. --quick runs one peer, the Perl echo (perl-base is on
# every Debian system; it is left out with a note where it is missing), and
# none of the protocol workloads, so the smoke needs no nginx, Node, etc. It asserts no timing: a slow or busy machine passes as
# long as every workload completed and every echo came back intact.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
args=(--quick --duration 0.3 --idle-conns 100 --port "${PORT:-7250}")
if [ $# -ge 1 ]; then args+=(--hotsock "$1"); fi
out=$(mktemp -d "${TMPDIR:-/tmp}/hotsock-smoke.XXXXXX")
trap 'rm -rf "$out"' EXIT
if ! "$HERE/run.sh" "${args[@]}" --out "$out/run" >"$out/stdout" 2>"$out/stderr"; then
  cat "$out/stdout" "$out/stderr"
  echo "smoke: bench/run.sh failed" >&2
  exit 1
fi
cat "$out/stdout"
for want in "P1: 50 clients" "P16: 50 clients" "large: 10 clients" "churn: connection" \
  "idle: RSS" "target(s) missed" "vs best peer"; do
  grep -qF "$want" "$out/stdout" || { echo "smoke: no '$want' line" >&2; exit 1; }
done
echo "smoke: ok"
