#!/usr/bin/env bash
# setup.sh: install what is missing (Debian 12, as root), build, then either
# run an example or run every test.
#
#   ./setup.sh run [SCRIPT [ARGS...]]   build and run examples/echo.lua (or SCRIPT)
#   ./setup.sh test                     build and run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-run}
shift || true

build_pkgs=(gcc make libc6-dev cmake pkg-config liblua5.4-dev libuv1-dev libssl-dev)
run_pkgs=(lua-socket) # `hotsock test` and `hotsock record` use LuaSocket
test_pkgs=(lua5.4 lua-busted lua-socket socat netcat-openbsd clang libclang-rt-14-dev
  redis-tools redis-server curl wrk strace mosquitto-clients libmemcached-tools memcached openssl
  swaks libnet-ssleay-perl lua-sec haproxy
  man-db groff-base dpkg-dev # packaging_spec: man -l, groff -ww, cpack -G DEB (dpkg-shlibdeps)
  prometheus chromium)       # admin_spec: promtool check metrics; the status page, headless

install_missing() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: missing packages: ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "setup.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build() { # build DIR [cmake options...]
  local dir=$1
  shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j"$(nproc)"
}

case "$mode" in
run)
  install_missing "${build_pkgs[@]}" "${run_pkgs[@]}"
  build build
  [ $# -eq 0 ] && set -- examples/echo.lua
  exec build/hotsock "$@"
  ;;
test)
  install_missing "${build_pkgs[@]}" "${test_pkgs[@]}"
  # 1. the release build: C unit tests and every spec
  build build
  (cd build && ctest --output-on-failure)
  # 2. the same suite on an AddressSanitizer + UBSan build; a sanitizer
  #    report in the server's stderr fails the spec that caused it
  build build-asan -DHS_SANITIZE=ON
  (cd build-asan && ctest --output-on-failure)
  # 3. the framer fuzz harness (clang/libFuzzer): replay the seeds, then fuzz
  #    for a bounded time
  CC=clang build build-fuzz -DHS_FUZZ=ON
  (cd build-fuzz && ctest --output-on-failure -R fuzz)
  ;;
*)
  echo "usage: ./setup.sh run [SCRIPT [ARGS...]] | ./setup.sh test" >&2
  exit 2
  ;;
esac
