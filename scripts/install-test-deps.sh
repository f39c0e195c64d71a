#!/usr/bin/env bash
# Installs the Debian packages the end-to-end tests and benchmarks need, when they are missing:
# a Docker engine, busybox for the test image, and the xfs/btrfs tools. Root only; idempotent.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-test-deps: not root; end-to-end tests will be skipped" >&2; exit 0; }
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v mkfs.xfs >/dev/null 2>&1 || need+=(xfsprogs)
command -v mkfs.btrfs >/dev/null 2>&1 || need+=(btrfs-progs)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || need+=(util-linux)
[ ${#need[@]} -eq 0 ] && exit 0
echo "install-test-deps: apt-get install ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=900 update -qq
apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
