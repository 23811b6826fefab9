#!/usr/bin/env bash
# make fresh-check: run .ci/run (install-deps, then `make test`) on a bare
# Debian 12 root that has nothing but Go added, to prove the project's own
# files provide everything the suite needs: no package, group, nix.conf,
# module cache or node root of this machine leaks in.
#
# The root is built with debootstrap (minbase bookworm, nothing included),
# the host's Go toolchain is copied to /usr/local/go (and the host's local CA
# certificates, the network's, not the project's; and /etc/hosts naming
# localhost, as every installed Debian has), and the committed HEAD
# is cloned into /src/slipway. .ci/run then runs with that root as the root
# of a private mount namespace (pivot_root; its /proc, /sys, /dev, /run and
# /tmp mounts vanish with it). It is not a booted container: the suite boots
# systemd-nspawn nodes of its own, which works from such a root exactly as
# from this host (no systemd as PID 1 either way).
#
# Why pivot_root and not chroot: under a chroot, the nodes' roots end up
# stacked on the chroot's directory instead of on their mount namespace's
# root, and the kernel then treats everything in them as chrooted: it
# refuses user namespaces (the packaged slipway-server failed at step USER,
# EPERM), and `nsenter -a` without -r entered the host's root (the harness
# now passes -r -w).
#
#   FRESH_ROOT   where to build the root (default /var/tmp/slipway-fresh)
#   FRESH_CMD    what to run inside (default: bash .ci/run)
#   FRESH_KEEP=1 keep the root afterwards (default: removed on success)
#   FRESH_REUSE=1 reuse a kept root (what an earlier run installed stays, so
#                it is no longer bare): only the clone moves to HEAD. For
#                iterating on a failure; the proof is a run without it.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${FRESH_ROOT:-/var/tmp/slipway-fresh}
CMD=${FRESH_CMD:-bash .ci/run}
say() { printf 'fresh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root (debootstrap, chroot, mounts)"
command -v debootstrap >/dev/null || die "debootstrap missing: run test/install-deps.sh"
command -v unshare >/dev/null || die "unshare missing (util-linux)"
goroot=$(go env GOROOT) || die "go is not on PATH"

# machine_files writes what every installed Debian 12 has and a minbase
# debootstrap does not: /etc/hosts naming localhost (debian-installer and
# the cloud images write it; without it "localhost" goes to DNS and fails).
machine_files() {
  [[ -e $ROOT/etc/hosts ]] || printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
}

# run_in_root runs $CMD in the root: pivot_root into it inside a private mount
# namespace, so its /proc, /sys, /dev, /run and /tmp mounts vanish with it.
run_in_root() {
  say "running '$CMD' in the fresh root (pivot_root in a private mount namespace)"
  set +e
  unshare --mount --propagation private /bin/bash -euo pipefail -c '
    root=$1; shift
    # The root must be a mount point: systemd-nspawn, run inside, remounts
    # "/" MS_SLAVE|MS_REC, which fails (EINVAL) on a plain directory.
    mount --bind "$root" "$root"
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs -o mode=0755 tmpfs "$root/run"
    mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
    # pivot_root, not chroot: the root must be the mount namespace'"'"'s
    # root. Under a chroot the kernel refuses user namespaces (EPERM, "the
    # caller is in a chroot") to everything below it, including the units
    # of the nodes the suite boots (PrivateUsers=, the packaged server).
    cd "$root"
    mkdir -p .fresh-oldroot
    pivot_root . .fresh-oldroot
    umount -l /.fresh-oldroot
    rmdir /.fresh-oldroot
    exec /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
      PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      /bin/bash -c "cd /src/slipway && $*"
  ' fresh "$ROOT" "$CMD"
}

if [[ ${FRESH_REUSE:-} == 1 && -d $ROOT/src/slipway ]]; then
  say "reusing $ROOT (not bare any more); moving /src/slipway to HEAD $(git rev-parse --short HEAD)"
  git -C "$ROOT/src/slipway" fetch -q "$PWD" HEAD
  git -C "$ROOT/src/slipway" reset -q --hard FETCH_HEAD
  git -C "$ROOT/src/slipway" clean -qfdx
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  machine_files
  run_in_root
  exit $?
fi

if [[ -e $ROOT ]]; then
  say "removing an earlier root $ROOT"
  # A killed run can leave mounts behind only inside its own (gone) mount
  # namespace, so the tree is plain files now.
  rm -rf --one-file-system "$ROOT"
fi
mkdir -p "$ROOT"

say "debootstrap --variant=minbase bookworm $ROOT (bare Debian 12, ~1-2 min)"
debootstrap --variant=minbase bookworm "$ROOT" http://deb.debian.org/debian >"$ROOT.debootstrap.log" 2>&1 ||
  { tail -20 "$ROOT.debootstrap.log" >&2; die "debootstrap failed (log $ROOT.debootstrap.log)"; }

say "adding Go from $goroot as /usr/local/go (the only addition besides /etc/hosts, which every installed Debian has)"
cp -a "$goroot" "$ROOT/usr/local/go"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
machine_files
# The machine's own TLS trust, not a package: where egress goes through a
# TLS-intercepting proxy, its CA sits in /usr/local/share/ca-certificates
# (the ca-certificates package that install-deps adds picks it up). A bare
# machine of the same network has it too.
shopt -s nullglob
cas=(/usr/local/share/ca-certificates/*.crt)
if ((${#cas[@]})); then
  say "adding this machine's local CA certificates: ${cas[*]##*/}"
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp "${cas[@]}" "$ROOT/usr/local/share/ca-certificates/"
fi
shopt -u nullglob

say "cloning HEAD ($(git rev-parse --short HEAD)) into /src/slipway"
git clone -q --no-hardlinks "$PWD" "$ROOT/src/slipway"

say "what the root lacks before .ci/run:"
for c in make git systemd-nspawn debootstrap age nix-build ip dpkg-deb; do
  chroot "$ROOT" /bin/sh -c "command -v $c >/dev/null" && say "  has $c" || say "  lacks $c"
done
chroot "$ROOT" getent group nixbld >/dev/null && say "  has group nixbld" || say "  lacks group nixbld"

run_in_root
rc=$?
set -e
if ((rc == 0)); then
  say "PASS: '$CMD' succeeded on a bare Debian 12 root with only Go added"
  [[ ${FRESH_KEEP:-} == 1 ]] || rm -rf --one-file-system "$ROOT" "$ROOT.debootstrap.log"
else
  say "FAIL: '$CMD' exited $rc (root kept in $ROOT)"
fi
exit $rc
