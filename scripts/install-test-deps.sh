#!/usr/bin/env bash
# Installs the Debian packages the end-to-end tests and benchmarks need, when they are missing:
# a Docker engine, busybox for the test image, the xfs/btrfs tools, and the servers and clients of the
# network backends (GlusterFS, Ceph with CephFS, RBD and the RADOS gateway for S3, sshd and sshfs,
# s3fs, fio), etcd (etcd-server, etcd-client: the cluster store's tests start a 3-member etcd on
# loopback), and nfs-common (mount.nfs), so the NFS test runs wherever the kernel has an NFS client
# and skips, saying why, where it has none, and OpenStack Keystone + Cinder (api, scheduler, volume) with
# RabbitMQ for the cinder backend's tests (test/servers/openstack.ts starts its own on loopback), and
# restic (backups: src/backups/restic.ts).
# Root only; idempotent; quiet when everything is there. No service is started by the install.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-test-deps: not root; end-to-end tests will be skipped" >&2; exit 0; }
need=()
want() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ] || { [ "${1#/}" != "$1" ] && [ -e "$1" ]; } || need+=("$2"); }
want dockerd docker.io
want /bin/busybox busybox-static
want mkfs.xfs xfsprogs
want mkfs.btrfs btrfs-progs
want mkfs.ext4 e2fsprogs
want losetup util-linux
want glusterd glusterfs-server
want glusterfs glusterfs-client
want ceph-mon ceph-mon
want ceph-mgr ceph-mgr
want ceph-osd ceph-osd
want ceph-mds ceph-mds
want ceph-fuse ceph-fuse
want rbd-fuse rbd-fuse
want ceph ceph-common
want radosgw radosgw
want /usr/sbin/sshd openssh-server
want ssh-keygen openssh-client
want sshfs sshfs
want s3fs s3fs
want /sbin/mount.nfs nfs-common
want fio fio
want /usr/bin/etcd etcd-server
want /usr/bin/etcdctl etcd-client
want setfattr attr
want uuidgen uuid-runtime
want curl curl
want /usr/bin/restic restic
want /usr/bin/keystone-wsgi-public keystone
want /usr/bin/uwsgi uwsgi-core
want /usr/lib/uwsgi/plugins/python3_plugin.so uwsgi-plugin-python3
want /usr/bin/cinder-api cinder-api
want /usr/bin/cinder-scheduler cinder-scheduler
want /usr/bin/cinder-volume cinder-volume
want /usr/lib/rabbitmq/bin/rabbitmq-server rabbitmq-server
[ ${#need[@]} -eq 0 ] && exit 0
echo "install-test-deps: apt-get install ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
# Debian's maintainer scripts start what they install through invoke-rc.d (rabbitmq-server, keystone,
# cinder-api/-scheduler/-volume, tgt, glusterd, docker, ssh...). Without systemd those run from their
# init scripts, outside any test's control and on the ports the tests need, and rabbitmq-server's
# postinst fails the whole install when its start fails. A policy-rc.d that denies every start (101)
# prevents that for the install: written only if there is none, and removed afterwards only if ours.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# install-test-deps: no service starts during the install\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  trap 'grep -q "^# install-test-deps:" "$policy" 2>/dev/null && rm -f "$policy"' EXIT
fi
apt-get -o DPkg::Lock::Timeout=900 update -qq
apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
