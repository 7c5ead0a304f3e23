# Sourced by the server scripts: fetch Debian packages of another release into a cache outside
# the repo, the way consul.sh fetches bullseye's consul, without touching the system's apt
# sources or dpkg database.
#
#   debian_fetch CACHE SUITE PKG...
#
# writes a private apt configuration under CACHE/apt (sources: deb.debian.org SUITE main, signed
# by the system's debian-archive-keyring), runs `apt-get update` and `apt-get download PKG...`
# with it into CACHE/deb, and unpacks every .deb with `dpkg-deb -x` into CACHE/root (replacing
# an older CACHE/root). Returns non-zero (after a message on stderr) on any failure.

debian_fetch() {
  local cache=$1 suite=$2
  shift 2
  mkdir -p "$cache/apt/sources" "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial" \
    "$cache/deb" || return 1
  cat >"$cache/apt/sources/$suite.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  local opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$cache/apt/sources"
    -o "Dir::State::Lists=$cache/apt/lists" -o "Dir::Cache=$cache/apt/cache"
    -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
  echo "debian-fetch: fetching the $suite package index (private apt configuration in $cache/apt)" >&2
  if ! apt-get "${opts[@]}" -qq update >&2; then
    echo "debian-fetch: apt-get update of Debian $suite failed (no access to deb.debian.org?)" >&2
    return 1
  fi
  rm -f "$cache"/deb/*.deb
  if ! (cd "$cache/deb" && apt-get "${opts[@]}" -qq download "$@" >&2); then
    echo "debian-fetch: apt-get download $* ($suite) failed" >&2
    return 1
  fi
  rm -rf "$cache/root"
  local deb
  for deb in "$cache"/deb/*.deb; do
    [ -e "$deb" ] || { echo "debian-fetch: nothing was downloaded" >&2; return 1; }
    dpkg-deb -x "$deb" "$cache/root" || { echo "debian-fetch: dpkg-deb -x $deb failed" >&2; return 1; }
    echo "debian-fetch: unpacked $(basename "$deb")" >&2
  done
}
