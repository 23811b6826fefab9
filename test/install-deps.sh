#!/usr/bin/env bash
# install-deps.sh: everything `make demo`, `make test` and .ci/run need on a
# bare Debian 12 machine (root, Go on PATH or in /usr/local/go), and nothing
# else. Idempotent and quiet when nothing is missing: it only runs apt-get
# when a package is absent, and only creates what does not exist yet.
#
#   test/install-deps.sh            install what is missing
#   test/install-deps.sh --check    list what is missing, exit 1 if anything is
set -euo pipefail

# Debian packages, and why:
#   systemd-container  systemd-nspawn: the end-to-end nodes and the demo
#   debootstrap        builds the node root once (cached in /var/cache/slipway)
#   iproute2           ip netns/veth for the tailnet suite and partitions
#   nftables           nft: packet loss and cut links in the partition tests
#                      (the kernel here has no sch_netem for tc netem)
#   age                the real age CLI as secret input (tests, demo)
#   nix-bin            the NixOS driver's tests against a real Nix store
#   dpkg-dev           dpkg-deb for the .deb package tests (dpkg is essential)
#   dbus-daemon        a private bus for slipway-agent's signal test (systemd-
#                      container pulls it in today; named so it stays)
#   gcc libc6-dev      cgo, which `go test -race` needs (without a C compiler Go
#                      turns cgo off and -race refuses to run)
#   git make ca-certificates   the build itself and the Go module proxy
#   chromium           the dashboard's real-browser test (test/dashboard, headless)
#   prometheus         a real Prometheus for the analysis gates' end-to-end test
#                      (test/e2e starts /usr/bin/prometheus itself on 127.0.0.1;
#                      the package's own service is stopped and disabled)
packages=(systemd-container debootstrap iproute2 nftables age nix-bin dpkg-dev dbus-daemon gcc libc6-dev git make ca-certificates chromium prometheus)

check=0
[[ ${1:-} == --check ]] && check=1
say() { echo "install-deps: $*" >&2; }
die() { say "error: $*"; exit 1; }

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Nix as root in single-user mode: Debian's nix-bin installs the store but
# not the nixbld group its nix.conf default names (build-users-group), so
# every build fails with "the group 'nixbld' ... does not exist". The Nix
# installer's layout: group nixbld with members nixbld1..N.
nixbld_missing() { ! getent group nixbld >/dev/null || ! getent passwd nixbld1 >/dev/null; }

if ((check)); then
  rc=0
  ((${#missing[@]})) && { say "missing packages: ${missing[*]}"; rc=1; }
  nixbld_missing && { say "missing: group nixbld with build users"; rc=1; }
  command -v go >/dev/null || [[ -x /usr/local/go/bin/go ]] || { say "missing: go"; rc=1; }
  exit $rc
fi

if ((${#missing[@]})); then
  [[ $EUID -eq 0 ]] || die "missing ${missing[*]}; run as root, or: apt-get install ${missing[*]}"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; die "apt-get install ${missing[*]} failed (output above)"
  fi
  rm -f "$log"
  # Debian's prometheus starts its own service, on :9090 of every interface;
  # the tests start theirs on 127.0.0.1. A service this script installed is
  # stopped and disabled (one installed before is left alone).
  if [[ " ${missing[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || say "warning: could not stop prometheus.service (the tests do not need it)"
  fi
fi

if nixbld_missing; then
  [[ $EUID -eq 0 ]] || die "the group nixbld is missing; run as root"
  say "creating group nixbld and build users nixbld1..8"
  getent group nixbld >/dev/null || groupadd --system nixbld
  for i in $(seq 1 8); do
    getent passwd "nixbld$i" >/dev/null && continue
    useradd --system --no-create-home --home-dir /var/empty --shell /usr/sbin/nologin \
      --gid nixbld --groups nixbld --comment "Nix build user $i" "nixbld$i"
  done
fi

if ! command -v go >/dev/null && [[ ! -x /usr/local/go/bin/go ]]; then
  die "go is not installed: put Go ≥ 1.26 on PATH (https://go.dev/dl/); Debian 12's golang is too old"
fi
