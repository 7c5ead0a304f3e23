#!/usr/bin/env bash
# etcd for kv's tests.
#
#   etcd.sh install      install the selected version (below) and protobuf-compiler if missing
#   etcd.sh start DIR    start one member on free 127.0.0.1 ports (data and log under DIR),
#                        wait until healthy, print `export KV_ETCD_ENDPOINTS=127.0.0.1:PORT` and
#                        `export KV_SERVER_VERSION=X.Y.Z` (the version the running member reports)
#   etcd.sh stop DIR     stop what `start DIR` started
#   etcd.sh env          print `export KV_ETCD_BIN=... KV_ETCDCTL_BIN=...` for kv-testkit, whose
#                        launchers (the drivers' reliability tests) then run the selected version
#
# Version selector: KV_ETCD_VERSION=3.4 (default) uses Debian bookworm's etcd-server and
# etcd-client 3.4, installed with apt-get; KV_ETCD_VERSION=3.5 uses Debian trixie's 3.5 packages,
# fetched with a private apt configuration (the system's sources are left alone) and unpacked
# into $KV_ETCD35_CACHE (default /var/cache/kv-test/etcd-3.5), reused when present.
# KV_ETCD_BIN / KV_ETCDCTL_BIN override the binaries.
#
# Only shell assignments go to stdout; progress and errors go to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSION=${KV_ETCD_VERSION:-3.4}
CACHE35=${KV_ETCD35_CACHE:-/var/cache/kv-test/etcd-3.5}
case "$VERSION" in
  3.4) ETCD=${KV_ETCD_BIN:-etcd}; ETCDCTL=${KV_ETCDCTL_BIN:-etcdctl} ;;
  3.5) ETCD=${KV_ETCD_BIN:-$CACHE35/root/usr/bin/etcd}; ETCDCTL=${KV_ETCDCTL_BIN:-$CACHE35/root/usr/bin/etcdctl} ;;
  *) echo "etcd.sh: KV_ETCD_VERSION=$VERSION: use 3.4 or 3.5" >&2; exit 2 ;;
esac

die() { echo "etcd.sh: ERROR: $*" >&2; exit 1; }

free_port() {
  # A port the kernel hands out for 127.0.0.1:0 (free now; a start that loses a race for it
  # retries, see cmd_start). Fallback without python: a port below the ephemeral range that
  # refuses connections.
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null && return 0
  local p
  for _ in $(seq 1 200); do
    p=$(( (RANDOM % 12000) + 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  die "no free port found"
}

install_35() {
  if "$ETCD" --version 2>/dev/null | grep -q '^etcd Version: 3\.5\.' && "$ETCDCTL" version >/dev/null 2>&1; then
    echo "etcd.sh: using $ETCD ($("$ETCD" --version | head -n 1))" >&2
    return 0
  fi
  # shellcheck source=debian-fetch.sh
  . "$HERE/debian-fetch.sh"
  debian_fetch "$CACHE35" trixie etcd-server etcd-client || die "fetching etcd 3.5 from Debian trixie failed"
  "$ETCD" --version 2>/dev/null | grep -q '^etcd Version: 3\.5\.' || die "$ETCD is not an etcd 3.5"
  "$ETCDCTL" version >/dev/null 2>&1 || die "$ETCDCTL does not run"
  echo "etcd.sh: installed $ETCD ($("$ETCD" --version | head -n 1))" >&2
}

cmd_install() {
  if [ "$VERSION" = 3.5 ]; then install_35; fi
  local missing=()
  if [ "$VERSION" = 3.4 ]; then
    command -v "$ETCD" >/dev/null 2>&1 || missing+=(etcd-server)
    command -v "$ETCDCTL" >/dev/null 2>&1 || missing+=(etcd-client)
  fi
  command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
  if [ ${#missing[@]} -eq 0 ]; then
    echo "etcd.sh: etcd $VERSION, etcdctl and protoc are installed" >&2
    return 0
  fi
  echo "etcd.sh: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
    $sudo apt-get update >&2 || die "apt-get update failed"
    $sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
      || die "apt-get install ${missing[*]} failed"
  fi
  # The package's service does not start in containers; we run etcd by hand.
  command -v "$ETCD" >/dev/null 2>&1 || die "etcd still missing after install"
  command -v "$ETCDCTL" >/dev/null 2>&1 || die "etcdctl still missing after install"
  command -v protoc >/dev/null 2>&1 || die "protoc still missing after install"
}

http_get() { # PORT PATH -> the response body (HTTP/1.0 on 127.0.0.1)
  local out
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  out=$(timeout 5 cat <&3 || true)
  exec 3<&- 3>&- || true
  printf '%s\n' "$out" | tail -n 1
}

cmd_env() {
  local etcd etcdctl
  etcd=$(command -v "$ETCD") || die "etcd $VERSION is not installed"
  etcdctl=$(command -v "$ETCDCTL") || die "etcdctl $VERSION is not installed"
  echo "export KV_ETCD_BIN=$etcd"
  echo "export KV_ETCDCTL_BIN=$etcdctl"
}

start_once() { # DIR -> 0 healthy (port in DIR/etcd.port), 2 a port was taken, 1 other failure
  local dir=$1
  rm -rf "$dir/data" "$dir/etcd.log" "$dir/etcd.out"
  local cport pport
  cport=$(free_port)
  pport=$(free_port)
  while [ "$pport" = "$cport" ]; do pport=$(free_port); done
  local curl="http://127.0.0.1:$cport" purl="http://127.0.0.1:$pport"
  # etcd reads ETCD_* variables as flags: start it with a clean set.
  env $(env | sed -n 's/^\(ETCD_[A-Za-z0-9_]*\)=.*/-u \1/p') \
    "$ETCD" --name kv-test --data-dir "$dir/data" \
    --listen-client-urls "$curl" --advertise-client-urls "$curl" \
    --listen-peer-urls "$purl" --initial-advertise-peer-urls "$purl" \
    --initial-cluster "kv-test=$purl" --initial-cluster-state new \
    --initial-cluster-token "kv-test-$cport" \
    --logger zap --log-outputs "$dir/etcd.log" \
    >"$dir/etcd.out" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$dir/etcd.pid"
  local deadline=$(( SECONDS + 60 ))
  until ETCDCTL_API=3 "$ETCDCTL" --endpoints="127.0.0.1:$cport" --dial-timeout=2s \
      --command-timeout=3s endpoint health >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$dir/etcd.pid"
      if grep -q "address already in use" "$dir/etcd.log" "$dir/etcd.out" 2>/dev/null; then
        return 2
      fi
      echo "etcd.sh: etcd exited during start-up; log tail:" >&2
      tail -n 40 "$dir/etcd.log" "$dir/etcd.out" >&2 2>/dev/null || true
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "etcd.sh: etcd not healthy after 60 s; log tail:" >&2
      tail -n 40 "$dir/etcd.log" "$dir/etcd.out" >&2 2>/dev/null || true
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/etcd.pid"
      return 1
    fi
    sleep 0.2
  done
  echo "$cport" >"$dir/etcd.port"
}

cmd_start() {
  local dir=${1:?usage: etcd.sh start DIR}
  command -v "$ETCD" >/dev/null 2>&1 || die "etcd $VERSION is not installed (run: KV_ETCD_VERSION=$VERSION $0 install)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/etcd.pid" ] && kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null; then
    die "an etcd started in $dir is still running (pid $(cat "$dir/etcd.pid")); run: $0 stop $dir"
  fi
  # free_port only finds ports free a moment ago: if etcd loses a race for one it exits at
  # once with "address already in use"; try again with new ports.
  local attempt rc
  for attempt in 1 2 3; do
    start_once "$dir" && break
    rc=$?
    if [ $rc -eq 2 ] && [ "$attempt" -lt 3 ]; then
      echo "etcd.sh: a port was taken; retrying with new ports" >&2
      continue
    fi
    [ $rc -eq 2 ] && { echo "etcd.sh: ports taken $attempt times; log tail:" >&2; tail -n 20 "$dir/etcd.log" >&2; }
    exit 1
  done
  local cport
  cport=$(cat "$dir/etcd.port")
  local pid
  pid=$(cat "$dir/etcd.pid")
  # The version the running member reports (GET /version: {"etcdserver":"3.5.16",...}).
  local version
  version=$(http_get "$cport" /version | sed -n 's/.*"etcdserver":"\([^"]*\)".*/\1/p')
  [ -n "$version" ] || die "etcd on port $cport did not report its version"
  echo "etcd.sh: etcd $version healthy on 127.0.0.1:$cport (pid $pid, dir $dir)" >&2
  echo "export KV_ETCD_ENDPOINTS=127.0.0.1:$cport"
  echo "export KV_SERVER_VERSION=$version"
}

cmd_stop() {
  local dir=${1:?usage: etcd.sh stop DIR}
  [ -f "$dir/etcd.pid" ] || { echo "etcd.sh: nothing started in $dir" >&2; return 0; }
  local pid
  pid=$(cat "$dir/etcd.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/etcd.pid"
  echo "etcd.sh: stopped etcd (pid $pid)" >&2
}

case "${1:-}" in
  install) cmd_install ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  env) cmd_env ;;
  *) echo "usage: [KV_ETCD_VERSION=3.4|3.5] $0 install | start DIR | stop DIR | env" >&2; exit 2 ;;
esac
