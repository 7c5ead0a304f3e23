#!/usr/bin/env bash
# ZooKeeper server for kv's tests.
#
#   bash scripts/servers/zookeeper.sh install      # apt-get install zookeeper libslf4j-java if missing
#   eval "$(bash scripts/servers/zookeeper.sh start DIR)"   # prints: export KV_ZK_ENDPOINTS=127.0.0.1:PORT
#   bash scripts/servers/zookeeper.sh stop DIR
#
# `start` runs ONE standalone server on a free loopback port, data and log under DIR, with
# TTL nodes enabled (extendedTypesEnabled=true) and a 1 s container/TTL sweep, and waits
# until `srvr` reports a Mode: line. Only the export line goes to stdout.
set -euo pipefail

JAR=/usr/share/java/zookeeper.jar
JARS=(/usr/share/java/slf4j-simple.jar /usr/share/java/slf4j-api.jar
      /usr/share/java/netty-codec.jar /usr/share/java/netty-resolver.jar
      /usr/share/java/netty-handler.jar /usr/share/java/netty-buffer.jar
      /usr/share/java/netty-common.jar /usr/share/java/netty-transport.jar
      /usr/share/java/netty-transport-native-epoll.jar
      /usr/share/java/netty-transport-native-unix-common.jar)

die() { echo "zookeeper.sh: $*" >&2; exit 1; }

installed() { [[ -f $JAR && -f /usr/share/java/slf4j-simple.jar ]] && command -v java >/dev/null 2>&1; }

cmd_install() {
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
  installed || die "zookeeper is not installed (run: bash scripts/servers/zookeeper.sh install)"
  mkdir -p "$dir/data"
  dir=$(cd "$dir" && pwd)
  local port cp
  port=$(free_port)
  cp=$JAR
  for j in "${JARS[@]}"; do [[ -f $j ]] && cp="$cp:$j"; done
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
  echo "export KV_ZK_ENDPOINTS=127.0.0.1:$port"
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
  *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
