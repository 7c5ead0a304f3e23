#!/usr/bin/env bash
# etcd for kv's tests.
#
#   etcd.sh install      install etcd-server, etcd-client and protobuf-compiler if missing
#   etcd.sh start DIR    start one member on free 127.0.0.1 ports (data and log under DIR),
#                        wait until healthy, print `export KV_ETCD_ENDPOINTS=127.0.0.1:PORT`
#   etcd.sh stop DIR     stop what `start DIR` started
#
# Only shell assignments go to stdout; progress and errors go to stderr.
set -euo pipefail

die() { echo "etcd.sh: ERROR: $*" >&2; exit 1; }

free_port() {
  # A loopback port nobody listens on (bash /dev/tcp; no nc here).
  local p
  for _ in $(seq 1 200); do
    p=$(( (RANDOM % 20000) + 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  die "no free port found"
}

cmd_install() {
  local missing=()
  command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
  command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
  command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
  if [ ${#missing[@]} -eq 0 ]; then
    echo "etcd.sh: etcd, etcdctl and protoc are installed" >&2
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
  command -v etcd >/dev/null 2>&1 || die "etcd still missing after install"
  command -v etcdctl >/dev/null 2>&1 || die "etcdctl still missing after install"
  command -v protoc >/dev/null 2>&1 || die "protoc still missing after install"
}

cmd_start() {
  local dir=${1:?usage: etcd.sh start DIR}
  command -v etcd >/dev/null 2>&1 || die "etcd is not installed (run: $0 install)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/etcd.pid" ] && kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null; then
    die "an etcd started in $dir is still running (pid $(cat "$dir/etcd.pid")); run: $0 stop $dir"
  fi
  rm -rf "$dir/data"
  local cport pport
  cport=$(free_port)
  pport=$(free_port)
  while [ "$pport" = "$cport" ]; do pport=$(free_port); done
  local curl="http://127.0.0.1:$cport" purl="http://127.0.0.1:$pport"
  # etcd reads ETCD_* variables as flags: start it with a clean set.
  env $(env | sed -n 's/^\(ETCD_[A-Za-z0-9_]*\)=.*/-u \1/p') \
    etcd --name kv-test --data-dir "$dir/data" \
    --listen-client-urls "$curl" --advertise-client-urls "$curl" \
    --listen-peer-urls "$purl" --initial-advertise-peer-urls "$purl" \
    --initial-cluster "kv-test=$purl" --initial-cluster-state new \
    --initial-cluster-token "kv-test-$cport" \
    --logger zap --log-outputs "$dir/etcd.log" \
    >"$dir/etcd.out" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$dir/etcd.pid"
  local deadline=$(( SECONDS + 60 ))
  until ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$cport" --dial-timeout=2s \
      --command-timeout=3s endpoint health >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "etcd.sh: etcd exited during start-up; log tail:" >&2
      tail -n 40 "$dir/etcd.log" "$dir/etcd.out" >&2 2>/dev/null || true
      rm -f "$dir/etcd.pid"
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "etcd.sh: etcd not healthy after 60 s; log tail:" >&2
      tail -n 40 "$dir/etcd.log" "$dir/etcd.out" >&2 2>/dev/null || true
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/etcd.pid"
      exit 1
    fi
    sleep 0.2
  done
  echo "etcd.sh: etcd healthy on 127.0.0.1:$cport (pid $pid, dir $dir)" >&2
  echo "export KV_ETCD_ENDPOINTS=127.0.0.1:$cport"
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
  *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
