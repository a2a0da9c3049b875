# Shared by scripts/broker-ns and scripts/broker-cluster: the chroot's mounts and processes.
# Sourced, not run.

# Mount points at or below a directory, deepest first (so they can be unmounted in order).
mounts_under() {
  awk -v p="$1" '$2 == p || index($2, p "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}

# /proc (fresh, not the host's bind), /dev and /sys (recursive binds, slave so that nothing
# done in the chroot propagates back). Idempotent.
mount_fs() {
  local dir=$1 fs
  mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc"
  for fs in dev sys; do
    if ! mountpoint -q "$dir/$fs"; then
      mount --rbind "/$fs" "$dir/$fs"
      mount --make-rslave "$dir/$fs"
    fi
  done
}

umount_fs() {
  local dir=$1 m
  for m in $(mounts_under "$dir/proc") $(mounts_under "$dir/dev") $(mounts_under "$dir/sys"); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

# PIDs of processes whose root directory is the chroot: the broker, its epmd and anything else
# started in it. This identifies exactly what a script started, whatever the process names.
chroot_pids() {
  local dir p r
  dir=$(readlink -f "$1")
  for p in /proc/[0-9]*; do
    r=$(readlink "$p/root" 2>/dev/null) || continue
    [ "$r" = "$dir" ] && echo "${p#/proc/}"
  done
  return 0
}
