#!/usr/bin/env bash
# Consul test server for kv (single node, 127.0.0.1 only).
#
#   consul.sh install       fetch Debian bullseye's consul package (1.8.7) into a cache outside
#                           the repo ($KV_CONSUL_CACHE, default /var/cache/kv-test/consul) with a
#                           private apt configuration (the system's sources are left alone);
#                           reused when present. Exit 3 with "CONSUL NOT RUN: <why>" if the
#                           package cannot be fetched.
#   consul.sh start DIR     start one agent on free loopback ports, data and log under DIR, wait
#                           until it has a leader and accepts a KV write; print ONLY
#                           `export KV_CONSUL_ADDR=127.0.0.1:<http port>` and
#                           `export KV_SERVER_VERSION=<version the agent reports>` on stdout.
#   consul.sh stop DIR      stop what `start DIR` started (pid file in DIR).
#   consul.sh bin           print the binary path (after install).
#
# $KV_CONSUL_BIN overrides the binary.
set -euo pipefail

CACHE=${KV_CONSUL_CACHE:-/var/cache/kv-test/consul}
BIN=${KV_CONSUL_BIN:-$CACHE/root/usr/bin/consul}

log() { echo "consul.sh: $*" >&2; }
not_run() {
  echo "" >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  echo "!!!! CONSUL NOT RUN: $* !!!!" >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  echo "CONSUL NOT RUN: $*"
  exit 3
}

install() {
  if [ -x "$BIN" ] && "$BIN" version >/dev/null 2>&1; then
    log "using $BIN ($("$BIN" version | head -n 1))"
    return 0
  fi
  mkdir -p "$CACHE/apt/sources" "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial" "$CACHE/deb"
  cat >"$CACHE/apt/sources/bullseye.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  local opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$CACHE/apt/sources"
    -o "Dir::State::Lists=$CACHE/apt/lists" -o "Dir::Cache=$CACHE/apt/cache" -o "Debug::NoLocking=1")
  log "fetching the bullseye package index (private apt configuration in $CACHE/apt)"
  if ! apt-get "${opts[@]}" -qq update >&2; then
    not_run "apt-get update of Debian bullseye failed (no network access to deb.debian.org?)"
  fi
  rm -f "$CACHE"/deb/consul_*.deb
  if ! (cd "$CACHE/deb" && apt-get "${opts[@]}" -qq download consul >&2); then
    not_run "apt-get download consul (bullseye) failed"
  fi
  local deb
  deb=$(ls "$CACHE"/deb/consul_*.deb 2>/dev/null | head -n 1)
  [ -n "$deb" ] || not_run "no consul .deb was downloaded"
  rm -rf "$CACHE/root"
  dpkg-deb -x "$deb" "$CACHE/root" || not_run "dpkg-deb -x $deb failed"
  "$BIN" version >/dev/null 2>&1 || not_run "$BIN does not run"
  log "installed $BIN ($("$BIN" version | head -n 1))"
}

free_port() {
  python3 - <<'EOF' 2>/dev/null || shuf -i 20000-59999 -n 1
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
EOF
}

http() { # METHOD PORT PATH [BODY] -> prints the response (status line, headers, body)
  local method=$1 port=$2 path=$3 body=${4:-}
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf '%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s' \
    "$method" "$path" "${#body}" "$body" >&3
  timeout 5 cat <&3 || true
  exec 3<&- 3>&- || true
}

start() {
  local dir=$1
  [ -x "$BIN" ] || { log "no consul binary at $BIN: run '$0 install' first"; exit 1; }
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  # free_port only finds ports free a moment ago: if consul loses a race for one it exits at
  # once with "address already in use"; try again with new ports.
  local attempt
  for attempt in 1 2 3; do
    if start_once "$dir"; then return 0; fi
    if [ "$attempt" -lt 3 ] && grep -q "address already in use" "$dir/consul.log"; then
      log "a port was taken; retrying with new ports"
      continue
    fi
    log "consul did not start; log tail:"; tail -n 40 "$dir/consul.log" >&2
    exit 1
  done
}

start_once() { # DIR -> 0 when ready (prints the export line), 1 when consul exited or hung
  local dir=$1
  rm -rf "$dir/data"; mkdir -p "$dir/data"
  local http_port server_port lan_port wan_port
  http_port=$(free_port); server_port=$(free_port); lan_port=$(free_port); wan_port=$(free_port)
  "$BIN" agent -server -bootstrap-expect=1 -node=n1 -bind=127.0.0.1 -advertise=127.0.0.1 \
    -client=127.0.0.1 -data-dir="$dir/data" -http-port="$http_port" -dns-port=-1 \
    -grpc-port=-1 -server-port="$server_port" -serf-lan-port="$lan_port" \
    -serf-wan-port="$wan_port" -hcl 'performance { raft_multiplier = 1 }' \
    >"$dir/consul.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$dir/consul.pid"
  local deadline=$((SECONDS + 60))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "consul exited early"
      rm -f "$dir/consul.pid"
      return 1
    fi
    if http GET "$http_port" /v1/status/leader 2>/dev/null | tail -n 1 | grep -q '127.0.0.1' &&
       http PUT "$http_port" /v1/kv/kv-readiness-probe x 2>/dev/null | tail -n 1 | grep -q true; then
      http DELETE "$http_port" /v1/kv/kv-readiness-probe >/dev/null 2>&1 || true
      break
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "consul did not become ready within 60 s"
      kill "$pid" 2>/dev/null || true
      rm -f "$dir/consul.pid"
      return 1
    fi
    sleep 0.2
  done
  local version
  version=$(http GET "$http_port" /v1/agent/self 2>/dev/null | tail -n 1 |
    sed -n 's/.*"Version":"\([0-9][0-9.]*\)".*/\1/p' | head -n 1)
  log "consul ${version:-(version unknown)} ready on 127.0.0.1:$http_port (pid $pid, data in $dir)"
  echo "export KV_CONSUL_ADDR=127.0.0.1:$http_port"
  [ -z "$version" ] || echo "export KV_SERVER_VERSION=$version"
}

stop() {
  local dir=$1
  [ -f "$dir/consul.pid" ] || { log "nothing to stop in $dir"; return 0; }
  local pid
  pid=$(cat "$dir/consul.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/consul.pid"
}

case "${1:-}" in
  install) install ;;
  start) [ $# -ge 2 ] || { echo "usage: $0 start DIR" >&2; exit 2; }; start "$2" ;;
  stop) [ $# -ge 2 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }; stop "$2" ;;
  bin) echo "$BIN" ;;
  *) echo "usage: $0 install | start DIR | stop DIR | bin" >&2; exit 2 ;;
esac
