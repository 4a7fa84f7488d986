#!/usr/bin/env bash
# bench/tls.sh: hotsock terminating TLS in front of its echo, side by side
# with HAProxy (mode tcp, bind ... ssl crt), the nginx stream module
# (listen ... ssl, proxy_pass) and stunnel, each of those terminating TLS in
# front of the same plain echo backend (bench/uv_echo), in one run.
#
#   bench/tls.sh                 the full run (about a minute)
#   bench/tls.sh --quick         about 1 s per figure and server (smoke run)
#   bench/tls.sh --help          every option
#
# Figures, per server:
#   full       new TCP connection + full TLS handshake + one 64-byte echo +
#              close, 16 clients at a time: handshakes/s, and the server's
#              CPU time per handshake (utime+stime from /proc/PID/stat before
#              and after; nginx: master and worker; the backend's apart).
#              Once with an ECDSA P-256 certificate, once with RSA 2048.
#   resumed    the same with the session of the client's previous connection
#              offered (TLS 1.3 session tickets), ECDSA certificate.
#   16 KiB     4 long-lived connections echoing 16 KiB lines: MB/s, and
#              CPU time per echo.
# Every server runs on CPU 0 with one worker (the backend too), the load
# generator bench/tls_load on CPU 1; each run also reports how much of the
# two CPUs other processes took, and warns past 10 %. Certificates are made
# with `openssl` in the output directory at start and deleted at exit.
# Only loopback; every process started here is stopped by its PID.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-bench}
DUR=3          # seconds per measured load run
PORT=${PORT:-7310}
HOTSOCK=""     # prebuilt hotsock binary (skips building it)
REPEAT=1
OUT=""
SERVERS="hotsock haproxy nginx stunnel"
HS_CONNS=16    # concurrent handshaking clients
TP_CONNS=4     # long-lived connections for throughput

usage() {
  cat <<EOF
usage: bench/tls.sh [options]

Build hotsock (Release), bench/tls_load and bench/uv_echo with CMake in
build-bench, then measure TLS termination by hotsock (examples/echo.lua),
HAProxy, nginx (stream) and stunnel, the last three in front of uv_echo:
full handshakes/s (ECDSA P-256 and RSA 2048), resumed handshakes/s, and
16 KiB echo throughput, with the server's CPU time per handshake or echo,
and the ratio hotsock / best peer for each figure.

options:
  --quick            about 1 s per figure and server (smoke run)
  --duration SECS    seconds per measured load run (default $DUR)
  --repeat N         run each figure N times per server, alternating the
                     servers, and use the median (default $REPEAT)
  --servers LIST     which servers, space or comma separated
                     (default "$SERVERS"); a peer that is not
                     installed is left out with a note
  --hotsock PATH     use this hotsock binary instead of building one
  --build-dir DIR    where to build (default build-bench; env BUILD_DIR)
  --port N           first of five ports used (default $PORT; env PORT)
  --conns N          concurrent clients in the handshake figures (default $HS_CONNS)
  --out DIR          keep logs and raw results here (default: a temp dir)
  -h, --help         this help

Servers: hotsock -l tls://... with examples/echo.lua; HAProxy with
nbthread 1 and mode tcp; nginx with worker_processes 1 and the stream
module; stunnel (one thread per connection, its only threading model),
all pinned to CPU 0 with the backend, so each gets one core. Every
server keeps its defaults for session tickets and caches.
EOF
}

while [ $# -gt 0 ]; do
  case $1 in
  --quick) DUR=1 ;;
  --duration) DUR=$2; shift ;;
  --repeat) REPEAT=$2; shift ;;
  --servers) SERVERS=${2//,/ }; shift ;;
  --hotsock) HOTSOCK=$2; shift ;;
  --build-dir) BUILD_DIR=$2; shift ;;
  --port) PORT=$2; shift ;;
  --conns) HS_CONNS=$2; shift ;;
  --out) OUT=$2; shift ;;
  -h | --help) usage; exit 0 ;;
  *) echo "tls.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "tls.sh: $*" >&2; exit 1; }

if [ -z "$OUT" ]; then OUT=$(mktemp -d "${TMPDIR:-/tmp}/hotsock-tls.XXXXXX"); fi
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)

# ---- build ----
echo "building in $BUILD_DIR" >&2
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >"$OUT/cmake.log" 2>&1 &&
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target hs_tls_load hs_uv_echo >>"$OUT/cmake.log" 2>&1 ||
  { cat "$OUT/cmake.log" >&2; die "building the bench tools failed"; }
if [ -z "$HOTSOCK" ]; then
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target hotsock >>"$OUT/cmake.log" 2>&1 ||
    { cat "$OUT/cmake.log" >&2; die "hotsock build failed"; }
  HOTSOCK=$BUILD_DIR/hotsock
fi
[ -x "$HOTSOCK" ] || die "no hotsock binary at $HOTSOCK"
LOAD=$BUILD_DIR/bench/tls_load
ECHO=$BUILD_DIR/bench/uv_echo
[ -x "$LOAD" ] && [ -x "$ECHO" ] || die "no $LOAD or $ECHO"
command -v openssl >/dev/null || die "needs the openssl command"

# ---- which peers ----
STUNNEL=$(command -v stunnel4 || command -v stunnel || true)
NGINX_STREAM=/usr/lib/nginx/modules/ngx_stream_module.so
LIST=()
for s in $SERVERS; do
  case $s in
  hotsock) ;;
  haproxy) command -v haproxy >/dev/null || { echo "tls.sh: no haproxy (apt-get install haproxy); left out" >&2; continue; } ;;
  nginx)
    command -v nginx >/dev/null && [ -f "$NGINX_STREAM" ] ||
      { echo "tls.sh: no nginx with $NGINX_STREAM (apt-get install nginx libnginx-mod-stream); left out" >&2; continue; } ;;
  stunnel) [ -n "$STUNNEL" ] || { echo "tls.sh: no stunnel (apt-get install stunnel4); left out" >&2; continue; } ;;
  *) die "unknown server $s (hotsock, haproxy, nginx, stunnel)" ;;
  esac
  LIST+=("$s")
done
[ ${#LIST[@]} -gt 0 ] || die "no server to measure"

# ---- placement ----
NCPU=$(nproc)
PIN_SRV=() PIN_LOAD=()
if command -v taskset >/dev/null && [ "$NCPU" -ge 2 ]; then
  PIN_SRV=(taskset -c 0) PIN_LOAD=(taskset -c 1)
else
  echo "tls.sh: fewer than 2 CPUs or no taskset: servers and load share CPUs" >&2
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null
TCK=$(getconf CLK_TCK)

BACKEND_PORT=$PORT
declare -A SPORT=([hotsock]=$((PORT + 1)) [haproxy]=$((PORT + 2)) [nginx]=$((PORT + 3)) [stunnel]=$((PORT + 4)))
listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
for p in $BACKEND_PORT "${SPORT[@]}"; do
  listening "$p" && die "port $p is in use (--port picks another range)"
done

# ---- processes: every one started here is remembered by PID ----
PIDS=()
# Stopping a PID also stops what it started (nginx's worker) if that is
# still there once the PID is gone.
kill_tree() {
  local p=$1 k kids
  kids=$(ps -o pid= --ppid "$p" 2>/dev/null)
  kill "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  for k in $kids; do kill -0 "$k" 2>/dev/null && kill "$k" 2>/dev/null; done
}
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill_tree "$p"; done
  rm -rf "$OUT/certs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn NAME PORT LOG CMD...: start CMD on the server CPU (a child of this shell:
# taskset execs it, so $! is the server's PID) and wait until PORT listens.
# Sets SPAWNED.
SPAWNED=""
spawn() {
  local name=$1 port=$2 log=$3
  shift 3
  "${PIN_SRV[@]}" "$@" >"$log" 2>&1 </dev/null &
  SPAWNED=$!
  PIDS+=("$SPAWNED")
  for _ in $(seq 100); do
    listening "$port" && return 0
    kill -0 "$SPAWNED" 2>/dev/null || break
    sleep 0.1
  done
  cat "$log" >&2
  die "$name did not start (log: $log)"
}

# halt PID: stop one process started by spawn and wait for it.
halt() {
  local p=$1 q keep=()
  kill_tree "$p"
  for q in "${PIDS[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
  PIDS=("${keep[@]}")
}

# The PIDs whose CPU time is the server's: the process and its children
# (nginx's worker; stunnel's threads are counted in its own /proc/PID/stat).
declare -A SPID
server_pids() {
  local p=${SPID[$1]}
  local kids
  kids=$(ps -o pid= --ppid "$p" 2>/dev/null | tr -s ' \n' ' ')
  echo "$p $kids"
}
cpu_ticks() { # PIDS...: utime+stime summed
  local p t=0 v
  for p in "$@"; do
    v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) && t=$((t + v))
  done
  echo "$t"
}
cpu_busy() { # the busy ticks of CPU 0 and CPU 1 (all but idle and iowait)
  awk '$1 == "cpu0" || $1 == "cpu1" {printf "%d ", $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}
kv() { # KEY LINE: the value of KEY=... in a result line
  sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p; s/^$1=\([^[:space:]]*\).*/\1/p" <<<"$2" | head -1
}

# ---- certificates ----
CERTS=$OUT/certs
mkdir -p "$CERTS" && chmod 700 "$CERTS"
make_cert() { # NAME NEWKEY-ARGS...
  local n=$1
  shift
  openssl req -x509 "$@" -nodes -keyout "$CERTS/$n.key" -out "$CERTS/$n.crt" -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1 ||
    die "openssl could not make the $n certificate"
  cat "$CERTS/$n.crt" "$CERTS/$n.key" >"$CERTS/$n.pem" # HAProxy's crt: both in one file
}
make_cert ecdsa -newkey ec -pkeyopt ec_paramgen_curve:P-256
make_cert rsa -newkey rsa:2048

# ---- server configurations ----
write_configs() { # CERT: the configs for the peers, with that certificate
  local c=$1 d=$OUT/conf.$1
  mkdir -p "$d/nginx"
  cat >"$d/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend tls
  bind 127.0.0.1:${SPORT[haproxy]} ssl crt $CERTS/$c.pem
  default_backend echo
backend echo
  server echo 127.0.0.1:$BACKEND_PORT
EOF
  cat >"$d/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx/nginx.pid;
error_log $d/nginx/error.log warn;
load_module $NGINX_STREAM;
events { worker_connections 8192; }
stream {
  server {
    listen 127.0.0.1:${SPORT[nginx]} ssl;
    ssl_protocols TLSv1.2 TLSv1.3; # 1.22's default stops at TLSv1.2
    ssl_certificate $CERTS/$c.crt;
    ssl_certificate_key $CERTS/$c.key;
    proxy_pass 127.0.0.1:$BACKEND_PORT;
  }
}
EOF
  cat >"$d/stunnel.conf" <<EOF
foreground = yes
pid =
syslog = no
debug = 3
output = $d/stunnel.log
[echo]
accept = 127.0.0.1:${SPORT[stunnel]}
connect = 127.0.0.1:$BACKEND_PORT
cert = $CERTS/$c.crt
key = $CERTS/$c.key
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
EOF
}

start_server() { # NAME CERT
  local s=$1 c=$2 d=$OUT/conf.$2 log=$OUT/$1.$2.log
  case $s in
  hotsock)
    spawn hotsock "${SPORT[hotsock]}" "$log" "$HOTSOCK" -l "tls://127.0.0.1:${SPORT[hotsock]}" \
      --tls-cert "$CERTS/$c.crt" --tls-key "$CERTS/$c.key" "$ROOT/examples/echo.lua" ;;
  haproxy) spawn haproxy "${SPORT[haproxy]}" "$log" haproxy -db -f "$d/haproxy.cfg" ;;
  nginx)
    spawn nginx "${SPORT[nginx]}" "$log" nginx -p "$d/nginx/" -e "$d/nginx/error.log" \
      -c "$d/nginx/nginx.conf" ;;
  stunnel) spawn stunnel "${SPORT[stunnel]}" "$log" "$STUNNEL" "$d/stunnel.conf" ;;
  esac
  SPID[$s]=$SPAWNED
}

FAILED=0 RUNS=0 NOISY=0
# measure SERVER FIGURE REP LOADARGS...: one load run with the CPU counts
# around it; appends a line to $OUT/results.
measure() {
  local s=$1 fig=$2 rep=$3 pids c0 c1 b0 b1 k0 k1 res
  shift 3
  read -r -a pids <<<"$(server_pids "$s")"
  c0=$(cpu_ticks "${pids[@]}")
  b0=$(cpu_ticks "$BACKEND_PID")
  k0=$(cpu_busy)
  res=$("${PIN_LOAD[@]}" "$LOAD" -p "${SPORT[$s]}" -d "$DUR" "$@")
  k1=$(cpu_busy)
  c1=$(cpu_ticks "${pids[@]}")
  b1=$(cpu_ticks "$BACKEND_PID")
  local rounds secs others
  rounds=$(kv rounds "$res") secs=$(kv secs "$res")
  # What else ran on the two CPUs: their busy time less ours, in % of a CPU.
  others=$(awk -v k0="$k0" -v k1="$k1" -v d=$((c1 - c0 + b1 - b0)) -v lc="$(kv cpu_pct "$res")" \
    -v t="$TCK" -v secs="${secs:-1}" 'BEGIN {
      split(k0, a, " "); split(k1, b, " ")
      o0 = ((b[1] - a[1]) - d) / t / secs * 100; o1 = (b[2] - a[2]) / t / secs * 100 - lc
      printf "%.0f %.0f", o0 < 0 ? 0 : o0, o1 < 0 ? 0 : o1 }')
  [ "$s" = hotsock ] && b1=$b0 # hotsock does not use the backend
  echo "$s $fig rep=$rep ticks=$((c1 - c0)) bticks=$((b1 - b0)) tck=$TCK other0=${others% *} other1=${others#* } $res" >>"$OUT/results"
  awk -v s="$s" -v f="$fig" -v t="$TCK" -v d=$((c1 - c0)) -v b=$((b1 - b0)) -v n="${rounds:-0}" \
    -v secs="${secs:-1}" -v rps="$(kv rounds_per_s "$res")" -v mb="$(kv mb_per_s "$res")" \
    -v rs="$(kv resumed "$res")" -v e="$(kv errors "$res")" -v lc="$(kv cpu_pct "$res")" \
    -v o="$others" 'BEGIN {
      split(o, x, " ")
      printf "  %-8s %-10s %6s/s %6s MB/s  cpu %3.0f%%  %6.1f us/round (+ backend %4.1f)  load %3s%%  others %2s%%/%2s%%  resumed %s  errors %s\n",
        s, f, rps, mb, d / t / secs * 100, n ? d * 1e6 / t / n : 0, n ? b * 1e6 / t / n : 0, lc, x[1], x[2], rs, e }'
  RUNS=$((RUNS + 1))
  if [ "${others% *}" -gt 10 ] || [ "${others#* }" -gt 10 ]; then
    NOISY=$((NOISY + 1))
    echo "tls.sh: other work took ${others% *}% of CPU 0 and ${others#* }% of CPU 1 during this run" >&2
  fi
  [ "${rounds:-0}" -gt 0 ] || { echo "tls.sh: no round completed against $s ($fig): $res" >&2; FAILED=1; }
  [ "$(kv mismatches "$res")" = 0 ] || { echo "tls.sh: $s echoed wrong bytes ($fig)" >&2; FAILED=1; }
  sleep 0.3 # let the server finish closing before the next run
}

# ---- the run ----
: >"$OUT/results"
echo "hotsock TLS bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $NCPU CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)),"
echo "  kernel $(uname -r), $(openssl version), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  hotsock $HOTSOCK; $(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3);" \
  "$(nginx -v 2>&1 | sed 's/^nginx version: //'); $("${STUNNEL:-false}" -version 2>&1 | grep -m1 '^stunnel' | cut -d' ' -f1-2)"
echo "  $DUR s per run x $REPEAT (medians), $HS_CONNS handshaking clients, $TP_CONNS throughput connections"
echo "  output in $OUT"
echo

# uv_echo leaves SIGPIPE as it is, and a proxy may close its side while an
# echo is being written: the backend runs with SIGPIPE ignored (inherited
# through exec; the subshell execs, so $! is uv_echo's PID).
(trap '' PIPE; exec "${PIN_SRV[@]}" "$ECHO" -p "$BACKEND_PORT") >"$OUT/uv_echo.log" 2>&1 </dev/null &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
for _ in $(seq 50); do listening "$BACKEND_PORT" && break; sleep 0.1; done
listening "$BACKEND_PORT" || die "the echo backend did not start"

FIGS_ECDSA=("full_ecdsa|-m handshake -c $HS_CONNS" "resumed|-m handshake -r -c $HS_CONNS"
  "tput|-m throughput -c $TP_CONNS -s 16384")
FIGS_RSA=("full_rsa|-m handshake -c $HS_CONNS")
for cert in ecdsa rsa; do
  write_configs "$cert"
  for s in "${LIST[@]}"; do start_server "$s" "$cert"; done
  for s in "${LIST[@]}"; do # each works before anything is measured
    res=$("${PIN_LOAD[@]}" "$LOAD" -p "${SPORT[$s]}" -n 20 -c 2 -d 5)
    [ "$(kv rounds "$res")" -ge 20 ] 2>/dev/null || die "$s ($cert) does not answer: $res (log: $OUT/$s.$cert.log)"
    echo "$s $cert params $res" >>"$OUT/results"
  done
  if [ "$cert" = ecdsa ]; then figs=("${FIGS_ECDSA[@]}"); else figs=("${FIGS_RSA[@]}"); fi
  for f in "${figs[@]}"; do
    fig=${f%%|*}
    read -r -a args <<<"${f#*|}"
    for ((rep = 1; rep <= REPEAT; rep++)); do
      for s in "${LIST[@]}"; do measure "$s" "$fig" "$rep" "${args[@]}"; done
    done
  done
  for s in "${LIST[@]}"; do halt "${SPID[$s]}"; done
done

# ---- the table ----
echo
echo "negotiated (first connection of each server):"
awk '$3 == "params" {
    v = c = g = ""
    for (i = 4; i <= NF; i++) {
      if ($i ~ /^version=/) v = substr($i, 9)
      if ($i ~ /^cipher=/) c = substr($i, 8)
      if ($i ~ /^group=/) g = substr($i, 7)
    }
    printf "  %-8s %-6s %s %s %s\n", $1, $2, v, c, g
  }' "$OUT/results"
echo
awk -v servers="${LIST[*]}" '
  function v(line, key,   i, n, a) {
    n = split(line, a, /[ ]/)
    for (i = 1; i <= n; i++) if (index(a[i], key "=") == 1) return substr(a[i], length(key) + 2)
    return ""
  }
  # the median over the repetitions of SERVER FIG of what(line)
  function med(s, f, what,   i, j, t, x, c) {
    c = N[s, f]
    if (!c) return ""
    for (i = 1; i <= c; i++) x[i] = val(L[s, f, i], what)
    for (i = 2; i <= c; i++) for (j = i; j > 1 && x[j - 1] > x[j]; j--) { t = x[j]; x[j] = x[j - 1]; x[j - 1] = t }
    return c % 2 ? x[(c + 1) / 2] : (x[c / 2] + x[c / 2 + 1]) / 2
  }
  function val(line, what,   n, t) {
    n = v(line, "rounds") + 0; t = v(line, "tck") + 0
    if (what == "rate") return v(line, "rounds_per_s") + 0
    if (what == "mb") return v(line, "mb_per_s") + 0
    if (what == "cpu") return n ? v(line, "ticks") * 1e6 / t / n : 0
    if (what == "cpub") return n ? (v(line, "ticks") + v(line, "bticks")) * 1e6 / t / n : 0
    if (what == "busy") return v(line, "ticks") / t / v(line, "secs") * 100
    if (what == "resumed") return n ? v(line, "resumed") * 100 / n : 0
    if (what == "p50") return v(line, "p50_us") + 0
    if (what == "lcpu") return v(line, "cpu_pct") + 0
    if (what == "tickets") return n ? v(line, "tickets") / n : 0
    if (what == "other0") return v(line, "other0") + 0
    if (what == "other1") return v(line, "other1") + 0
  }
  # a row: FIG WHAT FORMAT, ratio hotsock / best peer where BEST is max or min
  function row(label, f, what, fmt, best,   i, s, x, b, h, line) {
    line = sprintf("%-42s", label)
    b = ""
    for (i = 1; i <= ns; i++) {
      s = S[i]; x = med(s, f, what)
      line = line sprintf(" %10s", x == "" ? "-" : sprintf(fmt, x))
      if (s == "hotsock") h = x
      else if (x != "" && (b == "" || (best == "max" && x > b) || (best == "min" && x < b))) b = x
    }
    if (best != "" && h != "" && b != "" && b > 0) line = line sprintf(" %12.2f", h / b)
    print line
  }
  # a row of "CPU 0 / CPU 1" medians of the time other processes took
  function others(f,   i, line) {
    line = sprintf("%-42s", "  other work on CPU 0 / CPU 1 %")
    for (i = 1; i <= ns; i++)
      line = line sprintf(" %10s", N[S[i], f] ? sprintf("%d/%d", med(S[i], f, "other0"), med(S[i], f, "other1")) : "-")
    print line
  }
  {
    if ($3 == "params") next
    L[$1, $2, ++N[$1, $2]] = $0
  }
  END {
    ns = split(servers, S, " ")
    line = sprintf("%-42s", "figure")
    for (i = 1; i <= ns; i++) line = line sprintf(" %10s", S[i])
    print line sprintf(" %12s", "hotsock/best")
    row("ECDSA P-256 full handshakes/s", "full_ecdsa", "rate", "%.0f", "max")
    row("  server CPU us/handshake", "full_ecdsa", "cpu", "%.1f", "min")
    row("  server + backend CPU us/handshake", "full_ecdsa", "cpub", "%.1f", "min")
    row("  server CPU busy %", "full_ecdsa", "busy", "%.0f", "")
    row("  load generator CPU busy %", "full_ecdsa", "lcpu", "%.0f", "")
    others("full_ecdsa")
    row("  session tickets per handshake", "full_ecdsa", "tickets", "%.2f", "")
    row("RSA 2048 full handshakes/s", "full_rsa", "rate", "%.0f", "max")
    row("  server CPU us/handshake", "full_rsa", "cpu", "%.1f", "min")
    row("  server + backend CPU us/handshake", "full_rsa", "cpub", "%.1f", "min")
    row("  server CPU busy %", "full_rsa", "busy", "%.0f", "")
    row("  load generator CPU busy %", "full_rsa", "lcpu", "%.0f", "")
    others("full_rsa")
    row("resumed handshakes/s (tickets, ECDSA)", "resumed", "rate", "%.0f", "max")
    row("  server CPU us/handshake", "resumed", "cpu", "%.1f", "min")
    row("  server + backend CPU us/handshake", "resumed", "cpub", "%.1f", "min")
    row("  server CPU busy %", "resumed", "busy", "%.0f", "")
    row("  load generator CPU busy %", "resumed", "lcpu", "%.0f", "")
    others("resumed")
    row("  connections resumed %", "resumed", "resumed", "%.1f", "")
    row("  session tickets per handshake", "resumed", "tickets", "%.2f", "")
    row("16 KiB echo MB/s (4 connections)", "tput", "mb", "%.0f", "max")
    row("  server CPU us/echo", "tput", "cpu", "%.1f", "min")
    row("  server + backend CPU us/echo", "tput", "cpub", "%.1f", "min")
    row("  server CPU busy %", "tput", "busy", "%.0f", "")
    row("  load generator CPU busy %", "tput", "lcpu", "%.0f", "")
    others("tput")
  }' "$OUT/results"
echo
echo "(CPU: utime+stime of the server process(es) over the run; \"+ backend\" adds the"
echo " uv_echo backend the peers proxy to, which shares CPU 0; hotsock echoes itself)"
if [ "$NOISY" -gt 0 ]; then
  echo "tls.sh: in $NOISY of $RUNS runs other work took over 10% of CPU 0 or CPU 1:" \
    "read the figures as coming from a busy machine" >&2
fi
[ "$FAILED" = 0 ] || exit 1
exit 0
