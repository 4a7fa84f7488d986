#!/usr/bin/env bash
# bench/run.sh: hotsock against a plain libuv C echo server, side by side, in
# one run. Builds hotsock (Release), bench/load and bench/uv_echo, starts both
# servers pinned to CPU 0, loads each in turn from CPU 1, and prints the
# ratios hotsock/baseline against the performance budget of the design.
# In the same run and the same way it measures the peers a user would pick
# instead (bench/peers/: Perl IO::Select, luv, Node net, HAProxy's Lua TCP
# service) and, for the protocol examples, redis-server, memcached, nginx and
# Node http, and prints per workload one row per server with the ratio of
# hotsock to the best peer.
#
#   bench/run.sh                 the full run, peers and protocols (about 4 min)
#   bench/run.sh --quick         every workload for about 1 s (CI smoke)
#   bench/run.sh --peers none    hotsock and the libuv baseline only
#   bench/run.sh --help          every option
#
# What is measured, per workload and server:
#   CPU ns/msg     the server's utime+stime (/proc/PID/stat) over the load run,
#                  divided by the messages echoed in it: the fair figure when
#                  the load generator is what saturates
#   syscalls/msg   a separate window under `perf stat` (syscall tracepoints) or,
#                  without perf, `strace -c -f`; read() and write() are counted
#                  apart, so "writes per read" shows whether output is gathered
#   idle KiB/conn  the server's RSS growth with N idle connections open
#   Ir/msg         (--callgrind) instructions per message under callgrind
#   p50/p99        round-trip latency percentiles from the load generator
#                  (bench/load, redis-benchmark --csv, wrk --latency; memcslap
#                  reports none)
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-bench}
DUR=5          # seconds per measured load run
SYSDUR=2       # seconds of the syscall-counting window
IDLE=5000      # idle connections
PORT=${PORT:-7210}
HOTSOCK=""     # prebuilt hotsock binary (skips the CMake build)
CALLGRIND=0
PERF_PROFILE=0
STRICT=0
REPEAT=1       # load runs per workload and server, alternating; medians count
WORKERS=0      # --workers N: the workers figure
TRACER=auto
OUT=""
PEERS_OPT=""   # --peers LIST|all|none (default: all installed; --quick: perl)
PROTOCOLS=""   # --protocols / --no-protocols (default: on; --quick: off)
PEER_DIR=$ROOT/bench/peers

usage() {
  cat <<EOF
usage: bench/run.sh [options]

Build hotsock (Release) and the bench tools, then run hotsock with
examples/echo.lua and the plain libuv echo baseline side by side, and print
the ratios hotsock/baseline against the performance budget.

options:
  --quick            every workload ~1 s, 1,000 idle connections (CI smoke)
  --duration SECS    seconds per measured load run (default $DUR)
  --repeat N         run each workload N times per server, alternating the
                     servers, and use the median (default 1); helps on a
                     busy machine
  --idle-conns N     idle connections for the memory figure (default $IDLE)
  --hotsock PATH     use this hotsock binary instead of building one
  --build-dir DIR    where to build (default build-bench; env BUILD_DIR)
  --port N           first of the two ports used (default $PORT; env PORT)
  --tracer T         how to count syscalls: perf, strace or none (default:
                     perf if it can read syscall tracepoints, else strace)
  --workers N        also run hotsock with one worker and with --workers N,
                     unpinned (the workers need every CPU): CPU ns/msg over
                     all its processes, and how the connections split
  --callgrind        also count instructions per message under callgrind
  --profile          also record a perf profile of hotsock during the
                     one-at-a-time run (perf report --stdio goes to the output)
  --peers LIST       the peers to run beside hotsock, comma-separated, or
                     all or none: perl (IO::Select echo), luv (Lua 5.4),
                     node (net echo and http), haproxy (Lua TCP service),
                     redis (redis-server), memcached (memcached -t 1), nginx
                     (return 200). Default: all whose program is installed
                     (each missing one is named, with its Debian package);
                     with --quick, perl only
  --protocols        also run the protocol examples against their peers:
                     redis-benchmark (examples/redis.lua vs redis-server),
                     memcslap (examples/memcached.lua vs memcached) and wrk
                     (examples/http.lua vs nginx and Node http). On by
                     default; off with --quick
  --no-protocols     leave the protocol workloads out
  --out DIR          keep logs and raw results here (default: a temp dir)
  --strict           exit 1 when a target is missed (default: exit 0 when
                     the tools worked, whatever the figures)
  -h, --help         this help

The servers run on CPU 0 and the load on CPU 1 (taskset), so the machine
needs two CPUs for figures worth reading; numbers from one run are
comparable with each other, not with another machine's. Ports: the two
given by --port and the 30 after them.
EOF
}

QUICK=0
while [ $# -gt 0 ]; do
  case $1 in
  --quick) QUICK=1 DUR=1 SYSDUR=0.5 IDLE=1000 ;;
  --duration) DUR=$2; shift ;;
  --repeat) REPEAT=$2; shift ;;
  --idle-conns) IDLE=$2; shift ;;
  --hotsock) HOTSOCK=$2; shift ;;
  --build-dir) BUILD_DIR=$2; shift ;;
  --port) PORT=$2; shift ;;
  --tracer) TRACER=$2; shift ;;
  --callgrind) CALLGRIND=1 ;;
  --workers) WORKERS=$2; shift ;;
  --profile) PERF_PROFILE=1 ;;
  --out) OUT=$2; shift ;;
  --strict) STRICT=1 ;;
  --peers) PEERS_OPT=$2; shift ;;
  --protocols) PROTOCOLS=1 ;;
  --no-protocols) PROTOCOLS=0 ;;
  -h | --help) usage; exit 0 ;;
  *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "run.sh: $*" >&2; exit 1; }

# ---- peers: which to run ----
[ -n "$PROTOCOLS" ] || PROTOCOLS=$((1 - QUICK))
[ -n "$PEERS_OPT" ] || { if [ "$QUICK" = 1 ]; then PEERS_OPT=perl; else PEERS_OPT=all; fi; }
ALL_PEERS=(perl luv node haproxy redis memcached nginx)
# peer_missing NAME: nothing when NAME can run here, else the Debian
# package(s) that provide it.
peer_missing() {
  case $1 in
  perl) perl -MIO::Select -MIO::Socket::INET -e 1 >/dev/null 2>&1 || echo "perl-base" ;;
  luv) command -v lua5.4 >/dev/null && lua5.4 -e 'require "luv"' >/dev/null 2>&1 ||
    echo "lua5.4 and lua-luv" ;;
  node) command -v node >/dev/null || echo "nodejs" ;;
  haproxy) command -v haproxy >/dev/null || echo "haproxy" ;;
  redis) command -v redis-server >/dev/null || echo "redis-server" ;;
  memcached) command -v memcached >/dev/null || echo "memcached" ;;
  nginx) command -v nginx >/dev/null || echo "nginx" ;;
  esac
}
PEERS=() PEER_NOTES=()
case $PEERS_OPT in
all) want=("${ALL_PEERS[@]}") ;;
none | "") want=() ;;
*) IFS=, read -r -a want <<<"$PEERS_OPT" ;;
esac
for p in "${want[@]}"; do
  case " ${ALL_PEERS[*]} " in
  *" $p "*) ;;
  *) die "unknown peer '$p' (known: ${ALL_PEERS[*]}, all, none)" ;;
  esac
  m=$(peer_missing "$p")
  if [ -n "$m" ]; then
    PEER_NOTES+=("skipped peer $p: not installed (Debian package: $m)")
  else
    PEERS+=("$p")
  fi
done
has_peer() { case " ${PEERS[*]} " in *" $1 "*) return 0 ;; esac; return 1; }

if [ -z "$OUT" ]; then OUT=$(mktemp -d "${TMPDIR:-/tmp}/hotsock-bench.XXXXXX"); fi
mkdir -p "$OUT" || die "cannot create $OUT"
TOOLS=$OUT/bin
mkdir -p "$TOOLS"

# ---- build ----
CC=${CC:-cc}
CFLAGS="-std=c11 -O2 -Wall -Wextra"
if [ -z "$HOTSOCK" ]; then
  echo "building hotsock (Release) in $BUILD_DIR" >&2
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >"$OUT/cmake.log" 2>&1 &&
    cmake --build "$BUILD_DIR" -j"$(nproc)" --target hotsock >>"$OUT/cmake.log" 2>&1 ||
    { cat "$OUT/cmake.log" >&2; die "hotsock build failed"; }
  HOTSOCK=$BUILD_DIR/hotsock
fi
[ -x "$HOTSOCK" ] || die "no hotsock binary at $HOTSOCK"
$CC $CFLAGS -o "$TOOLS/load" "$ROOT/bench/load.c" || die "building load failed"
# shellcheck disable=SC2046
$CC $CFLAGS -o "$TOOLS/uv_echo" "$ROOT/bench/uv_echo.c" $(pkg-config --cflags --libs libuv) ||
  die "building uv_echo failed"
LOAD=$TOOLS/load

# ---- placement ----
NCPU=$(nproc)
PIN_SRV=() PIN_LOAD=()
if command -v taskset >/dev/null && [ "$NCPU" -ge 2 ]; then
  PIN_SRV=(taskset -c 0) PIN_LOAD=(taskset -c 1)
else
  echo "run.sh: fewer than 2 CPUs or no taskset: server and load share CPUs" >&2
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((IDLE + 100)) ] ||
  { IDLE=$(( $(ulimit -n) - 100 )); echo "run.sh: open files limited; $IDLE idle connections" >&2; }
TCK=$(getconf CLK_TCK)

if [ "$TRACER" = auto ]; then
  if command -v perf >/dev/null &&
    perf stat -e raw_syscalls:sys_enter -x, -o /dev/null -- true >/dev/null 2>&1; then
    TRACER=perf
  elif command -v strace >/dev/null; then
    TRACER=strace
  else
    TRACER=none
  fi
fi

# ---- servers ----
PIDS=()
cleanup() { # every server this script started, by its pid
  local p i
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for i in $(seq 50); do alive "$p" || break; sleep 0.1; done
    alive "$p" && kill -KILL "$p" 2>/dev/null
  done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME LOG CMD...: run CMD on the server CPU, wait for "listening on".
start() {
  local name=$1 log=$2 i
  shift 2
  "${PIN_SRV[@]}" "$@" 2>"$log" >/dev/null &
  local pid=$!
  for i in $(seq 600); do
    grep -q "listening on" "$log" 2>/dev/null && { echo "$pid"; return 0; }
    alive "$pid" || break
    sleep 0.1
  done
  cat "$log" >&2
  die "$name did not start"
}

# alive PID: the process runs (a zombie does not: the servers are started in
# a subshell, so their parent is init, which may reap them late)
alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "${st%% *}" != Z ]
}
stop() { # pid (started by start(), so not our child: poll until it is gone)
  local i
  kill "$1" 2>/dev/null
  for i in $(seq 100); do alive "$1" || return 0; sleep 0.1; done
}

# listening PORT: something listens on 127.0.0.1:PORT (ss when there is one,
# else a connect attempt)
listening() {
  if command -v ss >/dev/null; then
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}
# start_port NAME LOG PORT CMD...: run CMD on the server CPU, wait until it
# listens on PORT; print its pid. For the peers, which print no "listening
# on": a peer that does not start is reported and left out, not fatal.
start_port() {
  local name=$1 log=$2 port=$3 i
  shift 3
  if listening "$port"; then
    echo "run.sh: port $port is taken; $name left out (try --port)" >&2
    return 1
  fi
  "${PIN_SRV[@]}" "$@" >"$log" 2>&1 </dev/null &
  local pid=$!
  for i in $(seq 300); do
    listening "$port" && { echo "$pid"; return 0; }
    alive "$pid" || break
    sleep 0.1
  done
  kill "$pid" 2>/dev/null
  echo "run.sh: $name did not start on port $port; left out. Its log ($log):" >&2
  tail -5 "$log" >&2
  return 1
}
# forget PID: stop it and drop it from the pids the exit trap stops
forget() {
  local p keep=()
  stop "$1"
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

HS_PORT=$PORT UV_PORT=$((PORT + 1))
HS_PID=$(start hotsock "$OUT/hotsock.log" "$HOTSOCK" -l "127.0.0.1:$HS_PORT" "$ROOT/examples/echo.lua")
[ -n "$HS_PID" ] || exit 1
PIDS+=("$HS_PID")
UV_PID=$(start uv_echo "$OUT/uv_echo.log" "$TOOLS/uv_echo" -p "$UV_PORT")
[ -n "$UV_PID" ] || exit 1
PIDS+=("$UV_PID")

# ---- hotsock with raw framing and the echo peers: P1, P16, large ----
ECHO_NAMES=() ECHO_PIDS=() ECHO_PORTS=()
RAW_PORT=$((PORT + 10))
RAW_PID=$(start hotsock-raw "$OUT/hotsock-raw.log" "$HOTSOCK" -l "127.0.0.1:$RAW_PORT" "$ROOT/bench/echo_raw.lua")
[ -n "$RAW_PID" ] || exit 1
PIDS+=("$RAW_PID")
ECHO_NAMES+=(hotsock-raw) ECHO_PIDS+=("$RAW_PID") ECHO_PORTS+=("$RAW_PORT")
add_echo() { # NAME PORT CMD...: start an echo peer; one that fails is left out
  local name=$1 port=$2 pid
  shift 2
  pid=$(start_port "$name" "$OUT/$name.log" "$port" "$@") || return 0
  PIDS+=("$pid")
  ECHO_NAMES+=("$name") ECHO_PIDS+=("$pid") ECHO_PORTS+=("$port")
}
has_peer perl && add_echo perl $((PORT + 11)) perl "$PEER_DIR/perl_echo.pl" $((PORT + 11))
has_peer luv && add_echo luv $((PORT + 12)) lua5.4 "$PEER_DIR/luv_echo.lua" $((PORT + 12))
has_peer node && add_echo node $((PORT + 13)) node "$PEER_DIR/node_echo.js" $((PORT + 13))
if has_peer haproxy; then
  sed -e "s#@LUA@#$PEER_DIR/haproxy_echo.lua#g" -e "s#@PORT@#$((PORT + 14))#g" \
    "$PEER_DIR/haproxy_echo.cfg.in" >"$OUT/haproxy_echo.cfg"
  add_echo haproxy $((PORT + 14)) haproxy -f "$OUT/haproxy_echo.cfg"
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tree_ticks() { # PID: utime+stime of it and its children (workers, nginx's worker)
  local t=0 p
  for p in "$1" $(pgrep -P "$1"); do t=$((t + $(cpu_ticks "$p" 2>/dev/null || echo 0))); done
  echo "$t"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
kv() { # KEY LINE: the value of KEY=... in a load result line
  local k=$1 line=$2
  sed -n "s/.*[[:space:]]$k=\([^[:space:]]*\).*/\1/p; s/^$k=\([^[:space:]]*\).*/\1/p" <<<"$line" | head -1
}

# count_syscalls PID FILE LOADARGS...: a load run under the tracer; prints
# "total reads writes polls msgs" (polls: epoll_wait/epoll_pwait).
count_syscalls() {
  local pid=$1 f=$2 res
  shift 2
  case $TRACER in
  perf)
    res=$(perf stat -x, -o "$f" -p "$pid" \
      -e raw_syscalls:sys_enter -e syscalls:sys_enter_read -e syscalls:sys_enter_readv \
      -e syscalls:sys_enter_recvfrom -e syscalls:sys_enter_write -e syscalls:sys_enter_writev \
      -e syscalls:sys_enter_sendmsg -e syscalls:sys_enter_epoll_wait -e syscalls:sys_enter_epoll_pwait \
      -- "${PIN_LOAD[@]}" "$LOAD" "$@" 2>/dev/null) || true
    awk -F, -v msgs="$(kv msgs "$res")" '
      $3 ~ /raw_syscalls:sys_enter/ {t += $1}
      $3 ~ /sys_enter_(read|readv|recvfrom)$/ {r += $1}
      $3 ~ /sys_enter_(write|writev|sendmsg)$/ {w += $1}
      $3 ~ /sys_enter_epoll_p?wait$/ {p += $1}
      END {printf "%d %d %d %d %d\n", t, r, w, p, msgs}' "$f"
    ;;
  strace)
    strace -c -f -q -p "$pid" -o "$f" &
    local sp=$!
    sleep 0.5
    res=$("${PIN_LOAD[@]}" "$LOAD" "$@" 2>/dev/null)
    kill -INT "$sp" 2>/dev/null
    wait "$sp" 2>/dev/null
    # strace -c rows: % time, seconds, usecs/call, calls, [errors], syscall
    awk -v msgs="$(kv msgs "$res")" '
      $1 ~ /^[0-9.]+$/ {calls = $4}
      $NF == "total" {t = calls}
      $NF ~ /^(read|readv|recvfrom)$/ {r += calls}
      $NF ~ /^(write|writev|sendmsg)$/ {w += calls}
      $NF ~ /^epoll_p?wait$/ {p += calls}
      END {printf "%d %d %d %d %d\n", t, r, w, p, msgs}' "$f"
    ;;
  *) echo "0 0 0 0 0" ;;
  esac
}

# measure NAME PID WORKLOAD REP LOADARGS...: one load run with the CPU count
# around it, then (first repetition only) a syscall window. Appends a line to
# $OUT/results.
measure() {
  local name=$1 pid=$2 wl=$3 rep=$4
  shift 4
  local c0 c1 res cpu_ns sys
  c0=$(tree_ticks "$pid")
  res=$("${PIN_LOAD[@]}" "$LOAD" "$@" -d "$DUR")
  c1=$(tree_ticks "$pid")
  echo "$name $wl $res" >>"$OUT/load.log"
  local msgs rounds secs
  msgs=$(kv msgs "$res") rounds=$(kv rounds "$res") secs=$(kv secs "$res")
  cpu_ns=$(awk -v d=$((c1 - c0)) -v t="$TCK" -v m="${msgs:-0}" 'BEGIN {printf "%.0f", (m > 0) ? d * 1e9 / t / m : 0}')
  local cpu_pct
  cpu_pct=$(awk -v d=$((c1 - c0)) -v t="$TCK" -v s="${secs:-1}" 'BEGIN {printf "%.0f", d / t / s * 100}')
  sys="0 0 0 0 0"
  # the syscall window: for hotsock and the baseline (the budget's figures)
  if [ "$rep" = 1 ] && { [ "$name" = hotsock ] || [ "$name" = uv_echo ]; }; then
    sys=$(count_syscalls "$pid" "$OUT/sys.$name.$wl" "$@" -d "$SYSDUR")
  fi
  echo "$name $wl cpu_ns=$cpu_ns cpu_pct=$cpu_pct sys=${sys// /,} $res" >>"$OUT/results"
  printf '  %-11s %-9s %9s msg/s %8s MB/s  p50 %7s us  p99 %7s us  p99.9 %7s us  cpu %4s%%  %6s ns/msg  errors %s\n' \
    "$name" "$wl" "$(kv msgs_per_s "$res")" "$(kv mb_per_s "$res")" "$(kv p50_us "$res")" \
    "$(kv p99_us "$res")" "$(kv p999_us "$res")" "$cpu_pct" "$cpu_ns" "$(kv errors "$res")"
  local bad=""
  [ "${rounds:-0}" -gt 0 ] || bad="no round completed against $name ($wl)"
  [ "$(kv mismatches "$res")" = 0 ] || bad="$name echoed wrong bytes ($wl)"
  if [ -n "$bad" ]; then
    case $name in
    hotsock* | uv_echo) echo "run.sh: $bad" >&2; FAILED=1 ;;
    *) echo "run.sh: $bad (a peer: its row is marked, the run goes on)" >&2 ;;
    esac
  fi
}

# idle NAME PID: RSS growth per idle connection, in bytes.
idle() {
  local name=$1 pid=$2 port=$3 r0 r1 lp f
  f=$OUT/idle.$name
  r0=$(rss_kib "$pid")
  "${PIN_LOAD[@]}" "$LOAD" -m idle -p "$port" -c "$IDLE" >"$f" 2>&1 &
  lp=$!
  local i
  for i in $(seq 1200); do
    grep -q '^ready' "$f" && break
    kill -0 "$lp" 2>/dev/null || break
    sleep 0.05
  done
  sleep 0.5
  r1=$(rss_kib "$pid")
  kill -TERM "$lp" 2>/dev/null
  wait "$lp" 2>/dev/null
  local n
  n=$(sed -n 's/^ready conns=\([0-9]*\).*/\1/p' "$f")
  [ -n "$n" ] && [ "$n" -gt 0 ] || { echo "run.sh: idle connections to $name failed" >&2; FAILED=1; n=1; }
  echo "$name idle conns=$n rss0_kib=$r0 rss1_kib=$r1" >>"$OUT/results"
  printf '  %-11s idle      %d connections: RSS %d -> %d KiB, %.0f bytes each\n' \
    "$name" "$n" "$r0" "$r1" "$(awk -v a="$r0" -v b="$r1" -v n="$n" 'BEGIN {print (b - a) * 1024 / n}')"
  sleep 1 # let the server close them before the next figure
}

# callgrind NAME PORT CMD...: Ir per message for a short rr run.
callgrind() {
  local name=$1 port=$2
  shift 2
  local log=$OUT/cg.$name.log pid res
  pid=$(start "$name (callgrind)" "$log" valgrind --tool=callgrind \
    --callgrind-out-file="$OUT/callgrind.$name.%p" "$@")
  [ -n "$pid" ] || return 1
  PIDS+=("$pid")
  callgrind_control -z "$pid" >/dev/null 2>&1
  res=$("${PIN_LOAD[@]}" "$LOAD" -p "$port" -c 10 -d "$DUR")
  callgrind_control -d "$pid" >/dev/null 2>&1
  stop "$pid"
  local ir
  ir=$(awk '/^totals:/ {print $2}' "$OUT/callgrind.$name.$pid.1" 2>/dev/null)
  echo "$name callgrind ir=${ir:-0} $res" >>"$OUT/results"
  awk -v n="$name" -v ir="${ir:-0}" -v m="$(kv msgs "$res")" \
    'BEGIN {printf "  %-8s %.0f instructions per message (%d messages)\n", n, (m > 0) ? ir / m : 0, m}'
}

FAILED=0
: >"$OUT/results"
: >"$OUT/load.log"
echo "hotsock bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $NCPU CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)),"
echo "  kernel $(uname -r), libuv $(pkg-config --modversion libuv 2>/dev/null), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  $DUR s per run x $REPEAT (medians), syscalls counted by $TRACER over $SYSDUR s windows,"
echo "  output in $OUT"
peer_version() {
  case $1 in
  perl) perl -e 'printf "perl %vd", $^V' ;;
  luv) echo "luv $(dpkg-query -W -f '${Version}' lua-luv 2>/dev/null || echo '?') on $(lua5.4 -v 2>&1 | cut -d' ' -f1-2)" ;;
  node) echo "node $(node --version)" ;;
  haproxy) haproxy -v 2>/dev/null | awk 'NR == 1 {print "haproxy", $3}' ;;
  redis) redis-server --version | awk '{print "redis-server", substr($3, 3)}' ;;
  memcached) memcached -V 2>/dev/null ;;
  nginx) nginx -v 2>&1 | sed 's#.*nginx/#nginx #' ;;
  esac
}
if [ ${#PEERS[@]} -gt 0 ]; then
  vs=""
  for p in "${PEERS[@]}"; do vs="$vs, $(peer_version "$p")"; done
  echo "  peers: ${vs#, }"
else
  echo "  peers: none"
fi
for n in "${PEER_NOTES[@]}"; do echo "  $n"; done
echo "  protocol workloads (redis, memcached, http): $([ "$PROTOCOLS" = 1 ] && echo on || echo off)"
echo

WORKLOADS=(
  "p1|-m rr -c 50 -s 64"
  "p16|-m pipeline -c 50 -s 64 -P 16"
  "large|-m large -c 10 -s 16384"
  "churn|-m churn -c 10 -s 64"
)
for w in "${WORKLOADS[@]}"; do
  wl=${w%%|*}
  read -r -a args <<<"${w#*|}"
  for ((rep = 1; rep <= REPEAT; rep++)); do
    measure uv_echo "$UV_PID" "$wl" "$rep" -p "$UV_PORT" "${args[@]}"
    measure hotsock "$HS_PID" "$wl" "$rep" -p "$HS_PORT" "${args[@]}"
    case $wl in
    p1 | p16 | large)
      for i in "${!ECHO_NAMES[@]}"; do
        measure "${ECHO_NAMES[i]}" "${ECHO_PIDS[i]}" "$wl" "$rep" -p "${ECHO_PORTS[i]}" "${args[@]}"
      done
      ;;
    esac
  done
  if [ "$wl" = p1 ] && [ "$PERF_PROFILE" = 1 ] && command -v perf >/dev/null; then
    perf record -g -o "$OUT/perf.data" -p "$HS_PID" -- \
      "${PIN_LOAD[@]}" "$LOAD" -p "$HS_PORT" "${args[@]}" -d "$DUR" >/dev/null 2>&1
    perf report -i "$OUT/perf.data" --stdio --no-children --percent-limit 0.5 \
      >"$OUT/perf.report.txt" 2>/dev/null
    perf report -i "$OUT/perf.data" --stdio --no-children --sort symbol -g none \
      --percent-limit 0.3 >"$OUT/perf.flat.txt" 2>/dev/null
    echo "  (perf profile of hotsock: $OUT/perf.flat.txt, call graphs in perf.report.txt)"
  fi
done
idle uv_echo "$UV_PID" "$UV_PORT"
idle hotsock "$HS_PID" "$HS_PORT"
for p in "${ECHO_PIDS[@]}"; do forget "$p"; done

# ---- workers: one process, then --workers N, neither pinned ----
sockets_of() { find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null | wc -l; }
start_free() { # NAME LOG CMD...: start() without the CPU pinning
  local name=$1 log=$2 i
  shift 2
  "$@" 2>"$log" >/dev/null &
  local pid=$!
  for i in $(seq 600); do
    grep -q "listening on" "$log" 2>/dev/null && { sleep 0.3; echo "$pid"; return 0; }
    alive "$pid" || break
    sleep 0.1
  done
  cat "$log" >&2
  die "$name did not start"
}
# workers_run NAME PID PORT WL LOADARGS...: one load run; CPU over the
# process tree, and each worker's connections half-way through it.
workers_run() {
  local name=$1 pid=$2 port=$3 wl=$4 w c0 c1 res lp split="" base=()
  shift 4
  local kids
  kids=$(pgrep -P "$pid" | sort -n)
  for w in $kids; do base+=("$(sockets_of "$w")"); done
  c0=$(tree_ticks "$pid")
  "$LOAD" -p "$port" "$@" -d "$DUR" >"$OUT/workers.$name.$wl" 2>&1 &
  lp=$!
  sleep "$(awk -v d="$DUR" 'BEGIN {print d / 2}')"
  local i=0
  for w in $kids; do split="$split/$(($(sockets_of "$w") - base[i]))"; i=$((i + 1)); done
  wait "$lp"
  c1=$(tree_ticks "$pid")
  res=$(cat "$OUT/workers.$name.$wl")
  local msgs cpu_ns
  msgs=$(kv msgs "$res")
  cpu_ns=$(awk -v d=$((c1 - c0)) -v t="$TCK" -v m="${msgs:-0}" 'BEGIN {printf "%.0f", (m > 0) ? d * 1e9 / t / m : 0}')
  split=${split#/}
  echo "$name $wl cpu_ns=$cpu_ns split=${split:--} $res" >>"$OUT/results"
  printf '  %-10s %-9s %9s msg/s  p50 %7s us  p99 %7s us  %6s ns/msg  connections per worker %s\n' \
    "$name" "$wl" "$(kv msgs_per_s "$res")" "$(kv p50_us "$res")" "$(kv p99_us "$res")" "$cpu_ns" "${split:--}"
}
if [ "$WORKERS" -gt 1 ]; then
  echo
  echo "workers: hotsock alone and with --workers $WORKERS, server and load on any CPU"
  W1_PORT=$((PORT + 5)) WN_PORT=$((PORT + 6))
  W1_PID=$(start_free "hotsock w1" "$OUT/w1.log" "$HOTSOCK" --no-watch -l "127.0.0.1:$W1_PORT" "$ROOT/examples/echo.lua")
  PIDS+=("$W1_PID")
  WN_PID=$(start_free "hotsock w$WORKERS" "$OUT/wn.log" "$HOTSOCK" --no-watch --workers "$WORKERS" -l "127.0.0.1:$WN_PORT" "$ROOT/examples/echo.lua")
  PIDS+=("$WN_PID")
  for w in "p1|-m rr -c 50 -s 64" "p16|-m pipeline -c 50 -s 64 -P 16"; do
    wl=${w%%|*}
    read -r -a args <<<"${w#*|}"
    for ((rep = 1; rep <= REPEAT; rep++)); do
      workers_run w1 "$W1_PID" "$W1_PORT" "$wl" "${args[@]}"
      workers_run "w$WORKERS" "$WN_PID" "$WN_PORT" "$wl" "${args[@]}"
    done
  done
  stop "$WN_PID"
  stop "$W1_PID"
fi

if [ "$CALLGRIND" = 1 ]; then
  if command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; then
    echo
    callgrind uv_echo $((PORT + 2)) "$TOOLS/uv_echo" -p $((PORT + 2))
    callgrind hotsock $((PORT + 3)) "$HOTSOCK" -l "127.0.0.1:$((PORT + 3))" "$ROOT/examples/echo.lua"
  else
    echo "run.sh: --callgrind needs valgrind" >&2
  fi
fi

# ---- the protocol examples against their peers ----
# proto_row NAME WL C0 C1 OPS OPS_PER_S P50_US P99_US ERRORS: record one
# protocol run (CPU ticks C0..C1 over OPS operations) and print it.
proto_row() {
  local name=$1 wl=$2 d=$(($4 - $3)) ops=$5 rate=$6 p50=$7 p99=$8 errs=$9 cpu_ns
  cpu_ns=$(awk -v d="$d" -v t="$TCK" -v m="${ops:-0}" 'BEGIN {printf "%.0f", (m > 0) ? d * 1e9 / t / m : 0}')
  echo "$name $wl cpu_ns=$cpu_ns ops=${ops:-0} ops_per_s=${rate:-0} p50_us=${p50:-0} p99_us=${p99:-0} errors=${errs:-0}" >>"$OUT/results"
  printf '  %-13s %-13s %10s ops/s  p50 %7s us  p99 %7s us  %6s ns/op  errors %s\n' \
    "$name" "$wl" "${rate:-0}" "${p50:-0}" "${p99:-0}" "$cpu_ns" "${errs:-0}"
  if [ "${ops:-0}" = 0 ] || [ "${errs:-0}" != 0 ]; then
    case $name in
    hotsock*) echo "run.sh: hotsock failed the $wl workload (see $OUT)" >&2; FAILED=1 ;;
    *) echo "run.sh: $name had errors in $wl (a peer: its row is marked, the run goes on)" >&2 ;;
    esac
  fi
}
ms_to_us() { awk -v x="${1:-0}" 'BEGIN {printf "%.0f", x * 1000}'; }
LOAD_TIMEOUT=$(awk -v d="$DUR" 'BEGIN {printf "%d", d * 40 + 60}')

# redis_bench NAME PID PORT: redis-benchmark SET and GET, 50 clients, one
# command at a time and 16 pipelined; keys from a space of 100,000 (-r).
RB_N1=$(awk -v d="$DUR" 'BEGIN {n = int(d * 100000); print (n < 10000) ? 10000 : n}')
RB_N16=$(awk -v d="$DUR" 'BEGIN {n = int(d * 600000); print (n < 50000) ? 50000 : n}')
redis_bench() {
  local name=$1 pid=$2 port=$3 P t n wl c0 c1 f line rps p50 p99 errs ops
  for P in 1 16; do
    for t in set get; do
      n=$RB_N1
      [ "$P" = 1 ] || n=$RB_N16
      wl=redis_${t}_p$P f=$OUT/redis-benchmark.$name.$wl
      c0=$(tree_ticks "$pid")
      timeout "$LOAD_TIMEOUT" "${PIN_LOAD[@]}" redis-benchmark -h 127.0.0.1 -p "$port" -t "$t" \
        -n "$n" -c 50 -P "$P" -r 100000 --csv >"$f" 2>&1
      c1=$(tree_ticks "$pid")
      # "SET","135135.14","0.216","0.056","0.183","0.367","0.575","9.127": test,
      # rps, avg, min, p50, p95, p99, max (ms)
      line=$(tr -d '\r"' <"$f" | grep -i "^$t,")
      IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$line"
      errs=$(grep -ci 'error' "$f")
      ops=$n
      [ -n "$line" ] || ops=0
      echo "$name $wl $line" >>"$OUT/load.log"
      proto_row "$name" "$wl" "$c0" "$c1" "$ops" "$(printf '%.0f' "${rps:-0}")" \
        "$(ms_to_us "$p50")" "$(ms_to_us "$p99")" "$errs"
    done
  done
}

# mc_bench NAME PID PORT: memcslap set, then get, 50 threads (connections).
# memcslap reports the time of the threaded part only, and no latency; the
# CPU counted covers its whole run, so its single-threaded preload of the
# get test counts as operations too.
MC_N=$(awk -v d="$DUR" 'BEGIN {n = int(d * 2000); print (n < 200) ? 200 : n}')
mc_bench() {
  local name=$1 pid=$2 port=$3 t wl c0 c1 f keys secs pre errs rate
  for t in set get; do
    wl=mc_$t f=$OUT/memcslap.$name.$wl
    c0=$(tree_ticks "$pid")
    timeout "$LOAD_TIMEOUT" "${PIN_LOAD[@]}" memcslap --servers="127.0.0.1:$port" --concurrency=50 \
      --execute-number="$MC_N" --test="$t" >"$f" 2>&1
    c1=$(tree_ticks "$pid")
    # "Time to get 100000 keys by 50 threads: 0.943 seconds."
    read -r keys secs <<<"$(awk '/^Time to (set|get) +[0-9]+ keys by/ {print $4, $(NF - 1)}' "$f")"
    # "Time to set 2000 keys: 0.190 seconds." (the get test's preload)
    pre=$(awk '/^Time to set +[0-9]+ keys:/ {print $4}' "$f")
    errs=$(grep -ciE 'error|failure' "$f")
    rate=$(awk -v k="${keys:-0}" -v s="${secs:-0}" 'BEGIN {printf "%.0f", (s > 0) ? k / s : 0}')
    echo "$name $wl keys=${keys:-0} secs=${secs:-0} preload=${pre:-0}" >>"$OUT/load.log"
    proto_row "$name" "$wl" "$c0" "$c1" "$((${keys:-0} + ${pre:-0}))" "$rate" na na "$errs"
  done
}

# http_bench NAME PID PORT: wrk, one thread, 50 keep-alive connections, GET /.
WRK_DUR=$(awk -v d="$DUR" 'BEGIN {n = int(d + 0.5); print (n < 1) ? 1 : n}')
http_bench() {
  local name=$1 pid=$2 port=$3 wl=http c0 c1 f reqs rate p50 p99 errs
  f=$OUT/wrk.$name
  c0=$(tree_ticks "$pid")
  timeout "$LOAD_TIMEOUT" "${PIN_LOAD[@]}" wrk -t1 -c50 -d"${WRK_DUR}s" --latency \
    "http://127.0.0.1:$port/" >"$f" 2>&1
  c1=$(tree_ticks "$pid")
  read -r reqs rate p50 p99 errs <<<"$(awk '
    function us(x,   n) {
      n = x + 0
      if (x ~ /us$/) return n
      if (x ~ /ms$/) return n * 1000
      if (x ~ /m$/) return n * 60e6
      if (x ~ /s$/) return n * 1e6
      return n
    }
    / requests in / {reqs = $1}
    /^Requests\/sec:/ {rate = $2}
    $1 == "50%" {p50 = us($2)}
    $1 == "99%" {p99 = us($2)}
    /Non-2xx or 3xx responses:/ {errs += $NF}
    /Socket errors:/ {errs += $4 + $6 + $8 + $10}
    END {printf "%d %.0f %.0f %.0f %d\n", reqs, rate, p50, p99, errs}' "$f")"
  echo "$name $wl $(tr '\n' ' ' <"$f")" >>"$OUT/load.log"
  proto_row "$name" "$wl" "$c0" "$c1" "$reqs" "$rate" "$p50" "$p99" "$errs"
}

# proto_run WHAT TOOL PACKAGE BENCH SCRIPT PORT PEERS...: start hotsock with
# the example SCRIPT on PORT and each peer ("name|port|command", the command
# split at spaces), run BENCH against them in turn, REPEAT times, and stop
# them. Without TOOL the workload is left out, with a line saying so.
proto_run() {
  local what=$1 tool=$2 pkg=$3 bench=$4 script=$5 port=$6
  shift 6
  if ! command -v "$tool" >/dev/null; then
    echo "  skipped the $what workload: no $tool (Debian package $pkg)"
    return 0
  fi
  local names=() pids=() ports=() pid spec name cmd i
  pid=$(start "hotsock $what" "$OUT/hotsock-$what.log" "$HOTSOCK" -l "127.0.0.1:$port" "$script")
  [ -n "$pid" ] || exit 1
  PIDS+=("$pid")
  names+=(hotsock) pids+=("$pid") ports+=("$port")
  for spec in "$@"; do
    IFS='|' read -r name port cmd <<<"$spec"
    read -r -a cmd <<<"$cmd"
    pid=$(start_port "$name" "$OUT/$name.log" "$port" "${cmd[@]}") || continue
    PIDS+=("$pid")
    names+=("$name") pids+=("$pid") ports+=("$port")
  done
  for ((rep = 1; rep <= REPEAT; rep++)); do
    for i in "${!names[@]}"; do "$bench" "${names[i]}" "${pids[i]}" "${ports[i]}"; done
  done
  for pid in "${pids[@]}"; do forget "$pid"; done
}

if [ "$PROTOCOLS" = 1 ]; then
  echo
  echo "protocols: the examples against the servers they stand in for"
  peers=()
  if has_peer redis; then
    printf 'port %d\nbind 127.0.0.1\nsave ""\nappendonly no\ndir %s\n' $((PORT + 21)) "$OUT" >"$OUT/redis.conf"
    peers+=("redis-server|$((PORT + 21))|redis-server $OUT/redis.conf")
  fi
  proto_run redis redis-benchmark redis-tools redis_bench "$ROOT/examples/redis.lua" $((PORT + 20)) "${peers[@]}"
  peers=()
  asroot=""
  [ "$(id -u)" = 0 ] && asroot="-u root"
  has_peer memcached && peers+=("memcached|$((PORT + 23))|memcached -t 1 -p $((PORT + 23)) -l 127.0.0.1 -U 0 -c 4096 $asroot")
  proto_run memcached memcslap libmemcached-tools mc_bench "$ROOT/examples/memcached.lua" $((PORT + 22)) "${peers[@]}"
  peers=()
  if has_peer nginx; then
    mkdir -p "$OUT/nginx"
    sed -e "s#@DIR@#$OUT/nginx#g" -e "s#@PORT@#$((PORT + 26))#g" "$PEER_DIR/nginx_http.conf.in" >"$OUT/nginx/nginx.conf"
    peers+=("nginx|$((PORT + 26))|nginx -p $OUT/nginx/ -e $OUT/nginx/error.log -c $OUT/nginx/nginx.conf")
  fi
  has_peer node && peers+=("node-http|$((PORT + 27))|node $PEER_DIR/node_http.js $((PORT + 27))")
  proto_run http wrk wrk http_bench "$ROOT/examples/http.lua" $((PORT + 25)) "${peers[@]}"
fi

# ---- the table ----
echo
awk -v tracer="$TRACER" -v strict="$STRICT" '
  function v(line, key,   i, n, a) {
    n = split(line, a, /[ ]/)
    for (i = 1; i <= n; i++) if (index(a[i], key "=") == 1) return substr(a[i], length(key) + 2)
    return ""
  }
  function sys(name, wl, i,   a) { split(v(S[name, wl], "sys"), a, ","); return a[i] + 0 }
  # the median of KEY over the repetitions of NAME WL
  function med(name, wl, key,   k, i, j, t, x, c) {
    c = N[name, wl]
    if (!c) return ""
    for (i = 1; i <= c; i++) x[i] = v(L[name, wl, i], key) + 0
    for (i = 2; i <= c; i++) for (j = i; j > 1 && x[j - 1] > x[j]; j--) { t = x[j]; x[j] = x[j - 1]; x[j - 1] = t }
    return c % 2 ? x[(c + 1) / 2] : (x[c / 2] + x[c / 2 + 1]) / 2
  }
  function row(what, h, u, ratio, target, ok) {
    printf "%-44s %12s %12s %8s  %-22s %s\n", what, h, u, ratio, target, ok
    if (ok == "MISSED") missed++
  }
  function mark(c) { return c ? "met" : "MISSED" }
  {
    R[$1, $2] = $0
    L[$1, $2, ++N[$1, $2]] = $0
    if (N[$1, $2] == 1) S[$1, $2] = $0
  }
  END {
    printf "%-44s %12s %12s %8s  %-22s %s\n", "figure", "hotsock", "uv_echo", "ratio", "target", "result"
    printf "%-44s %12s %12s %8s  %-22s %s\n", "------", "-------", "-------", "-----", "------", "------"
    h = med("hotsock", "p1", "cpu_ns"); u = med("uv_echo", "p1", "cpu_ns")
    r = u > 0 ? h / u : 0
    row("P1: 50 clients, 64 B lines, CPU ns/msg", h, u, sprintf("%.2f", r), "<= 0.80x baseline", mark(r > 0 && r <= 0.8))
    if (tracer != "none") {
      ht = sys("hotsock", "p1", 1); hm = sys("hotsock", "p1", 5); ut = sys("uv_echo", "p1", 1); um = sys("uv_echo", "p1", 5)
      hs = hm ? ht / hm : 0; us = um ? ut / um : 0
      row("P1: syscalls/msg", sprintf("%.2f", hs), sprintf("%.2f", us), sprintf("%.2f", us ? hs / us : 0), "<= 2.1", mark(hs > 0 && hs <= 2.1))
      row("P1:   read / write / epoll_wait per msg",
          sprintf("%.2f/%.2f/%.2f", sys("hotsock","p1",2)/(hm?hm:1), sys("hotsock","p1",3)/(hm?hm:1), sys("hotsock","p1",4)/(hm?hm:1)),
          sprintf("%.2f/%.2f/%.2f", sys("uv_echo","p1",2)/(um?um:1), sys("uv_echo","p1",3)/(um?um:1), sys("uv_echo","p1",4)/(um?um:1)), "", "", "")
    }
    h = med("hotsock", "p16", "cpu_ns"); u = med("uv_echo", "p16", "cpu_ns")
    r = u > 0 ? h / u : 0
    row("P16: 50 clients, 16 lines/write, CPU ns/msg", h, u, sprintf("%.2f", r), "<= 1.30x baseline", mark(r > 0 && r <= 1.3))
    if (tracer != "none") {
      hr = sys("hotsock", "p16", 2); hw = sys("hotsock", "p16", 3); ur = sys("uv_echo", "p16", 2); uw = sys("uv_echo", "p16", 3)
      hm = sys("hotsock", "p16", 5); um = sys("uv_echo", "p16", 5)
      a = hr ? hw / hr : 0; b = ur ? uw / ur : 0
      row("P16: write() per read()", sprintf("%.2f", a), sprintf("%.2f", b), "", "<= 1.0 (one per read)", mark(hr > 0 && a <= 1.0))
      row("P16:   syscalls/msg", sprintf("%.3f", hm ? sys("hotsock","p16",1) / hm : 0), sprintf("%.3f", um ? sys("uv_echo","p16",1) / um : 0), "", "", "")
    }
    h = med("hotsock", "large", "mb_per_s"); u = med("uv_echo", "large", "mb_per_s")
    r = u > 0 ? h / u : 0
    row("large: 10 clients, 16 KiB, MB/s", sprintf("%.0f", h), sprintf("%.0f", u), sprintf("%.2f", r), ">= 0.95x baseline", mark(r >= 0.95))
    h = med("hotsock", "large", "cpu_ns"); u = med("uv_echo", "large", "cpu_ns")
    row("large:   CPU ns/msg", h, u, sprintf("%.2f", u > 0 ? h / u : 0), "", "")
    h = med("hotsock", "churn", "rounds_per_s"); u = med("uv_echo", "churn", "rounds_per_s")
    r = u > 0 ? h / u : 0
    row("churn: connection per request, conns/s", h, u, sprintf("%.2f", r), ">= 0.95x baseline", mark(r >= 0.95))
    h = med("hotsock", "churn", "cpu_ns"); u = med("uv_echo", "churn", "cpu_ns")
    row("churn:   CPU ns/conn", h, u, sprintf("%.2f", u > 0 ? h / u : 0), "", "")
    hn = v(R["hotsock", "idle"], "conns"); un = v(R["uv_echo", "idle"], "conns")
    h = hn ? (v(R["hotsock", "idle"], "rss1_kib") - v(R["hotsock", "idle"], "rss0_kib")) * 1024 / hn : 0
    u = un ? (v(R["uv_echo", "idle"], "rss1_kib") - v(R["uv_echo", "idle"], "rss0_kib")) * 1024 / un : 0
    row(sprintf("idle: RSS bytes per connection (%d)", hn), sprintf("%.0f", h), sprintf("%.0f", u), sprintf("%.2f", u > 0 ? h / u : 0), "<= 4096 bytes", mark(h <= 4096))
    if (N["w1", "p1"]) {
      for (k = 0; k < 2; k++) {
        wl = k ? "p16" : "p1"
        wn = ""
        for (key in N) { split(key, kk, SUBSEP); if (kk[1] ~ /^w[0-9]+$/ && kk[1] != "w1" && kk[2] == wl) wn = kk[1] }
        h = med(wn, wl, "cpu_ns"); u = med("w1", wl, "cpu_ns")
        r = u > 0 ? h / u : 0
        row(sprintf("%s: %s workers vs 1, CPU ns/msg (all processes)", wl, substr(wn, 2)), h, u, sprintf("%.2f", r), "<= 1.10x one worker", mark(r > 0 && r <= 1.10))
        row(sprintf("%s:   connections per worker (mid-run)", wl), v(L[wn, wl, 1], "split"), "", "", "every worker > 0", mark(v(L[wn, wl, 1], "split") !~ /(^|\/)0(\/|$)/ && v(L[wn, wl, 1], "split") != "-"))
        row(sprintf("%s:   msg/s, %s workers vs 1", wl, substr(wn, 2)), med(wn, wl, "msgs_per_s"), med("w1", wl, "msgs_per_s"), sprintf("%.2f", med("w1", wl, "msgs_per_s") > 0 ? med(wn, wl, "msgs_per_s") / med("w1", wl, "msgs_per_s") : 0), "", "")
      }
    }
    if (R["hotsock", "callgrind"] != "") {
      hi = v(R["hotsock", "callgrind"], "ir") / (v(R["hotsock", "callgrind"], "msgs") + 0.0001)
      ui = v(R["uv_echo", "callgrind"], "ir") / (v(R["uv_echo", "callgrind"], "msgs") + 0.0001)
      row("callgrind: instructions per message (P1)", sprintf("%.0f", hi), sprintf("%.0f", ui), sprintf("%.2f", ui > 0 ? hi / ui : 0), "", "")
    }
    printf "\n%d target(s) missed\n", missed
    exit (strict && missed) ? 3 : 0
  }' "$OUT/results"
rc=$?

# ---- the peers: one table per workload, one row per server ----
SPECS="p1|P1: 64 B lines one at a time, 50 clients|msgs_per_s|msg/s|msg|echo.lua, line"
SPECS="$SPECS;p16|P16: 64 B lines, 16 per write, 50 clients|msgs_per_s|msg/s|msg|echo.lua, line"
SPECS="$SPECS;large|large: 16 KiB messages, 10 clients|mb_per_s|MB/s|msg|echo.lua, line"
SPECS="$SPECS;redis_set_p1|redis-benchmark SET, 50 clients, one at a time|ops_per_s|req/s|req|redis.lua"
SPECS="$SPECS;redis_get_p1|redis-benchmark GET, 50 clients, one at a time|ops_per_s|req/s|req|redis.lua"
SPECS="$SPECS;redis_set_p16|redis-benchmark SET, 50 clients, -P 16|ops_per_s|req/s|req|redis.lua"
SPECS="$SPECS;redis_get_p16|redis-benchmark GET, 50 clients, -P 16|ops_per_s|req/s|req|redis.lua"
SPECS="$SPECS;mc_set|memcslap set, 50 threads|ops_per_s|op/s|op|memcached.lua"
SPECS="$SPECS;mc_get|memcslap get, 50 threads|ops_per_s|op/s|op|memcached.lua"
SPECS="$SPECS;http|HTTP hello, wrk 1 thread, 50 keep-alive connections|ops_per_s|req/s|req|http.lua"
echo
echo "peers: hotsock beside the servers a user would pick instead, per workload"
echo "  (medians of $REPEAT; \"vs best peer\": hotsock's throughput over the best peer's,"
echo "  higher is better, and its CPU per operation over the lowest peer's, lower is"
echo "  better; uv_echo is the baseline, not a peer; latency: p50/p99 round trip)"
awk -v specs="$SPECS" '
  function v(line, key,   i, n, a) {
    n = split(line, a, /[ ]/)
    for (i = 1; i <= n; i++) if (index(a[i], key "=") == 1) return substr(a[i], length(key) + 2)
    return ""
  }
  function med(name, wl, key,   i, j, t, x, c) {
    c = N[name, wl]
    if (!c) return 0
    for (i = 1; i <= c; i++) x[i] = v(L[name, wl, i], key) + 0
    for (i = 2; i <= c; i++) for (j = i; j > 1 && x[j - 1] > x[j]; j--) { t = x[j]; x[j] = x[j - 1]; x[j - 1] = t }
    return c % 2 ? x[(c + 1) / 2] : (x[c / 2] + x[c / 2 + 1]) / 2
  }
  function errs(name, wl,   i, e) {
    for (i = 1; i <= N[name, wl]; i++) e += v(L[name, wl, i], "errors") + v(L[name, wl, i], "mismatches")
    return e
  }
  function lat(name, wl, key) {
    return v(L[name, wl, 1], key) == "na" ? "n/a" : sprintf("%.0f", med(name, wl, key))
  }
  function num(x, unit) { return unit == "MB/s" ? sprintf("%.1f", x) : sprintf("%.0f", x) }
  function ispeer(n) { return n !~ /^hotsock/ && n != "uv_echo" }
  $2 != "idle" && $2 != "callgrind" && $1 !~ /^w[0-9]+$/ {
    if (!(($1, $2) in N)) order[$2, ++cnt[$2]] = $1
    L[$1, $2, ++N[$1, $2]] = $0
  }
  END {
    ns = split(specs, S, ";")
    for (k = 1; k <= ns; k++) {
      split(S[k], f, "|")
      wl = f[1]; key = f[3]; unit = f[4]; op = f[5]
      if (!cnt[wl]) continue
      bt = 0; bc = 0; btn = ""; bcn = ""
      for (i = 1; i <= cnt[wl]; i++) {
        n = order[wl, i]
        if (!ispeer(n) || errs(n, wl) > 0) continue
        t = med(n, wl, key); c = med(n, wl, "cpu_ns")
        if (t > bt) { bt = t; btn = n }
        if (c > 0 && (bc == 0 || c < bc)) { bc = c; bcn = n }
      }
      printf "\n%s\n", f[2]
      printf "  %-28s %11s %11s %8s %8s  %s\n", "server", unit, "CPU ns/" op, "p50 us", "p99 us", "vs best peer: throughput, CPU/" op
      # hotsock first, then the baseline, then the peers as they ran
      m = 0
      for (i = 1; i <= cnt[wl]; i++) if (order[wl, i] ~ /^hotsock/) row[++m] = order[wl, i]
      for (i = 1; i <= cnt[wl]; i++) if (order[wl, i] == "uv_echo") row[++m] = order[wl, i]
      for (i = 1; i <= cnt[wl]; i++) if (ispeer(order[wl, i])) row[++m] = order[wl, i]
      for (i = 1; i <= m; i++) {
        n = row[i]
        label = n
        if (n == "hotsock") label = "hotsock (" f[6] ")"
        else if (n == "hotsock-raw") label = "hotsock (echo_raw.lua, raw)"
        else if (n == "uv_echo") label = "uv_echo (baseline)"
        t = med(n, wl, key); c = med(n, wl, "cpu_ns")
        r = ""
        if (n ~ /^hotsock/) r = btn == "" ? "(no peer)" : sprintf("%.2fx %s, %.2fx %s", t / bt, btn, bc > 0 ? c / bc : 0, bcn)
        e = errs(n, wl)
        if (t == 0) r = r (r == "" ? "" : "  ") "(FAILED: nothing done)"
        else if (e > 0) r = r (r == "" ? "" : "  ") "(errors: " e ")"
        printf "  %-28s %11s %11.0f %8s %8s  %s\n", label, num(t, unit), c, lat(n, wl, "p50_us"), lat(n, wl, "p99_us"), r
      }
    }
  }' "$OUT/results"
[ "$FAILED" = 0 ] || exit 1
[ "$rc" = 3 ] && exit 1
exit 0
