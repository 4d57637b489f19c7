#!/usr/bin/env bash
# Stop the single-node cluster started by scripts/slurm/up.sh: exactly the daemons whose pid files are in
# $OCCREID_SLURM_DIR (slurmd, slurmctld, and munged only if up.sh started it), then remove the pid files
# (a stale slurmctld pid file breaks package removal), and the /etc/slurm/slurm.conf symlink up.sh made.
# Safe to run twice.
set -uo pipefail
dir=${OCCREID_SLURM_DIR:-/var/tmp/occreid-slurm}
stop() {  # stop NAME PIDFILE
  local pidfile=$2 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "slurm-down: stopped $1 (pid $pid)" >&2
  fi
  rm -f "$pidfile"
}
stop slurmd "$dir/slurmd.pid"
stop slurmctld "$dir/slurmctld.pid"
if [ -f "$dir/munged.pid" ]; then
  stop munged "$dir/munged.pid"
  rm -f /run/munge/munged.pid
fi
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$dir/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf
fi
exit 0
