#!/usr/bin/env bash
# ZooKeeper server for kv's tests.
#
#   bash scripts/servers/zookeeper.sh install      # install the selected version (below) if missing
#   eval "$(bash scripts/servers/zookeeper.sh start DIR)"
#       # prints: export KV_ZK_ENDPOINTS=127.0.0.1:PORT and export KV_SERVER_VERSION=X.Y.Z
#       # (the version the running server reports in `srvr`)
#   bash scripts/servers/zookeeper.sh stop DIR
#   bash scripts/servers/zookeeper.sh env          # prints: export KV_ZK_CLASSPATH=... for
#       # kv-testkit, whose launchers (the driver's reliability tests) then run the selected version
#
# `start` runs ONE standalone server on a free loopback port, data and log under DIR, with
# TTL nodes enabled (extendedTypesEnabled=true) and a 1 s container/TTL sweep, and waits
# until `srvr` reports a Mode: line. Only export lines go to stdout.
#
# Version selector: KV_ZK_VERSION=3.8 (default) uses Debian bookworm's zookeeper and
# libslf4j-java (apt-get install). KV_ZK_VERSION=3.9 uses Debian trixie's zookeeper,
# libzookeeper-java, libnetty-java and libslf4j-java, fetched with a private apt configuration
# (the system's sources are left alone) and unpacked into $KV_ZK39_CACHE (default
# /var/cache/kv-test/zookeeper-3.9), reused when present. The 3.9 zookeeper.jar's manifest
# Class-Path names /usr/share/java/zookeeper-jute.jar, which is bookworm's 3.8 jute: the 3.9
# jute jar goes first on the class path, or the server fails on connect
# (NoSuchMethodError ConnectRequest.setReadOnly). The rest of libzookeeper-java's
# dependencies (jackson, metrics, snappy, ...: the same packages at bookworm versions) come
# from the system through that manifest; install checks they are installed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSION=${KV_ZK_VERSION:-3.8}
CACHE39=${KV_ZK39_CACHE:-/var/cache/kv-test/zookeeper-3.9}
NETTY=(netty-codec netty-resolver netty-handler netty-buffer netty-common netty-transport
       netty-transport-native-epoll netty-transport-native-unix-common)
case "$VERSION" in
  3.8) JAVA_DIR=/usr/share/java; JUTE=() ;;
  3.9) JAVA_DIR=$CACHE39/root/usr/share/java; JUTE=("$JAVA_DIR/zookeeper-jute.jar") ;;
  *) echo "zookeeper.sh: KV_ZK_VERSION=$VERSION: use 3.8 or 3.9" >&2; exit 2 ;;
esac
JAR=$JAVA_DIR/zookeeper.jar
JARS=("$JAVA_DIR/slf4j-simple.jar" "$JAVA_DIR/slf4j-api.jar")
for n in "${NETTY[@]}"; do JARS+=("$JAVA_DIR/$n.jar"); done

die() { echo "zookeeper.sh: $*" >&2; exit 1; }

installed() {
  [[ -f $JAR && -f $JAVA_DIR/slf4j-simple.jar ]] || return 1
  [[ $VERSION = 3.8 ]] || [[ -f ${JUTE[0]} && -f $JAVA_DIR/netty-handler.jar ]] || return 1
  command -v java >/dev/null 2>&1
}

classpath() {
  local cp="" j
  for j in "${JUTE[@]}" "$JAR" "${JARS[@]}"; do [[ -f $j ]] && cp="${cp:+$cp:}$j"; done
  printf '%s\n' "$cp"
}

install_39() {
  # 3.9 reuses the system's Java and the libraries bookworm's 3.8 pulls in.
  KV_ZK_VERSION=3.8 bash "$0" install
  if ! installed; then
    # shellcheck source=debian-fetch.sh
    . "$HERE/debian-fetch.sh"
    debian_fetch "$CACHE39" trixie zookeeper libzookeeper-java libnetty-java libslf4j-java \
      || die "ZOOKEEPER 3.9 NOT INSTALLED: fetching it from Debian trixie failed"
    installed || die "ZOOKEEPER 3.9 NOT INSTALLED: $JAR, ${JUTE[0]} or netty missing after the fetch"
  fi
  # Every dependency of trixie's libzookeeper-java must be fetched or installed.
  local deb dep missing=()
  deb=$(ls "$CACHE39"/deb/libzookeeper-java_*.deb | head -n 1)
  for dep in $(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/[(|].*//; s/ //g'); do
    if ls "$CACHE39"/deb/"${dep}"_*.deb >/dev/null 2>&1; then continue; fi
    dpkg -s "$dep" >/dev/null 2>&1 || missing+=("$dep")
  done
  [[ ${#missing[@]} -eq 0 ]] || die "ZOOKEEPER 3.9: dependencies neither fetched nor installed: ${missing[*]}"
  echo "zookeeper.sh: zookeeper 3.9 in $CACHE39 ($(basename "$(readlink -f "$JAR")"))" >&2
}

cmd_install() {
  if [[ $VERSION = 3.9 ]]; then install_39; return; fi
  if installed; then
    echo "zookeeper.sh: zookeeper and slf4j already installed" >&2
    return 0
  fi
  echo "zookeeper.sh: installing zookeeper libslf4j-java" >&2
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update >&2 || die "apt-get update failed"
  $sudo apt-get install -y zookeeper libslf4j-java >&2 || die "apt-get install zookeeper libslf4j-java FAILED"
  installed || die "ZOOKEEPER NOT INSTALLED: $JAR or java missing after apt-get install"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null && return 0
  # Fallback without python: pick a random high port that refuses connections.
  local p
  for _ in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

srvr() { # port -> srvr output (empty on failure)
  local port=$1 out=""
  if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
    printf 'srvr' >&3
    out=$(timeout 2 cat <&3 || true)
    exec 3<&- 3>&-
  fi 2>/dev/null
  printf '%s' "$out"
}

cmd_start() {
  local dir=${1:?usage: zookeeper.sh start DIR}
  installed || die "zookeeper $VERSION is not installed (run: KV_ZK_VERSION=$VERSION bash scripts/servers/zookeeper.sh install)"
  mkdir -p "$dir/data"
  dir=$(cd "$dir" && pwd)
  local port cp
  port=$(free_port)
  cp=$(classpath)
  cat >"$dir/zoo.cfg" <<EOF
tickTime=500
initLimit=10
syncLimit=5
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
4lw.commands.whitelist=*
admin.enableServer=false
maxClientCnxns=0
extendedTypesEnabled=true
EOF
  nohup java -Xmx512m -XX:-UsePerfData -Dznode.container.checkIntervalMs=1000 \
    -Dzookeeper.admin.enableServer=false -cp "$cp" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
    >"$dir/zookeeper.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$dir/zookeeper.pid"
  local deadline=$((SECONDS + 60))
  until srvr "$port" | grep -q '^Mode:'; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "zookeeper.sh: server exited early; log tail:" >&2
      tail -n 40 "$dir/zookeeper.log" >&2 || true
      exit 1
    fi
    if (( SECONDS > deadline )); then
      echo "zookeeper.sh: server not serving after 60 s; log tail:" >&2
      tail -n 40 "$dir/zookeeper.log" >&2 || true
      kill "$pid" 2>/dev/null || true
      exit 1
    fi
    sleep 0.1
  done
  # "Zookeeper version: 3.9.3-<sha>, built on ..." -> 3.9.3
  local version
  version=$(srvr "$port" | sed -n 's/^Zookeeper version: \([0-9][0-9.]*\).*/\1/p')
  [[ -n $version ]] || die "the server on port $port did not report its version"
  echo "zookeeper.sh: zookeeper $version serving on 127.0.0.1:$port (pid $pid)" >&2
  echo "export KV_ZK_ENDPOINTS=127.0.0.1:$port"
  echo "export KV_SERVER_VERSION=$version"
}

cmd_stop() {
  local dir=${1:?usage: zookeeper.sh stop DIR}
  local pidfile="$dir/zookeeper.pid"
  [[ -f $pidfile ]] || { echo "zookeeper.sh: no pid file in $dir" >&2; return 0; }
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  install) cmd_install ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  env) installed || die "zookeeper $VERSION is not installed"; echo "export KV_ZK_CLASSPATH=$(classpath)" ;;
  *) echo "usage: [KV_ZK_VERSION=3.8|3.9] $0 install | start DIR | stop DIR | env" >&2; exit 2 ;;
esac
