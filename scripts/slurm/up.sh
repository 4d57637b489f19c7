#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on this machine (loopback only), as root, and wait until it is usable.
#
# Everything lives in $OCCREID_SLURM_DIR (default /var/tmp/occreid-slurm): slurm.conf, state, logs, pid files.
# /etc/slurm/slurm.conf becomes a symlink to that slurm.conf — the default location is needed because
# Snakemake's job step drops SLURM_CONF from the environment of the `srun` it runs inside each job. A
# slurm.conf that this script did not write is never replaced (the script stops). The node line comes from `slurmd -C` (CPUs and RealMemory must match the
# machine, or slurmctld drains the node). No cgroups and no systemd needed (proctrack/linuxproc, task/none);
# no accounting daemon, so Snakemake must poll with squeue (MinJobAge=300 keeps finished jobs visible).
# Stop it with scripts/slurm/down.sh.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
dir=${OCCREID_SLURM_DIR:-/var/tmp/occreid-slurm}
ctld_port=${OCCREID_SLURMCTLD_PORT:-6817}
slurmd_port=${OCCREID_SLURMD_PORT:-6818}
conf="$dir/slurm.conf"
etc_conf=/etc/slurm/slurm.conf
marker="# Written by occreid scripts/slurm/up.sh"
say() { echo "slurm-up: $*" >&2; }
die() { say "$*"; exit 1; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$((limit * 2))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  die "timed out after ${limit}s waiting for $what (logs in $dir)"
}
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

[ "$(id -u)" -eq 0 ] || die "must run as root (starts munged, slurmctld, slurmd)"
if [ -e "$etc_conf" ] && ! grep -q "^$marker" "$etc_conf" 2>/dev/null; then
  die "$etc_conf exists and was not written by this script: refusing to replace this machine's SLURM setup"
fi
for tool in munged slurmctld slurmd scontrol sinfo; do command -v "$tool" >/dev/null || die "$tool missing: run scripts/slurm/install.sh"; done
mkdir -p "$dir"
if alive "$dir/slurmctld.pid" || alive "$dir/slurmd.pid"; then
  die "a cluster from $dir is already running: stop it with scripts/slurm/down.sh"
fi

# munge: reuse a running munged, else start one as user munge and remember that we did.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 0755 /run/munge
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; }
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  rm -f /run/munge/munged.pid
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  wait_for 10 "munged" sh -c 'munge -n | unmunge'
  cp /run/munge/munged.pid "$dir/munged.pid"
  say "started munged (pid $(cat "$dir/munged.pid"))"
fi

host=$(hostname -s)
node=$(slurmd -C | head -n 1)
case "$node" in NodeName=*) ;; *) die "unexpected 'slurmd -C' output: $node" ;; esac
node_name=${node%% *}; node_name=${node_name#NodeName=}
rm -rf "$dir/ctld" "$dir/spool"  # fresh state: slurmctld refuses state saved under another configuration
mkdir -p "$dir/ctld" "$dir/spool"
cat > "$conf" <<CONF
$marker: a single-node cluster on the loopback interface.
ClusterName=occreid
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
EnforcePartLimits=ALL
MinJobAge=300
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=main Nodes=$node_name Default=YES MaxTime=INFINITE State=UP
CONF

if SLURM_CONF="$conf" timeout 10 scontrol ping 2>/dev/null | grep -q UP; then
  die "a SLURM controller already answers on port $ctld_port (another cluster?): stop it, or set OCCREID_SLURMCTLD_PORT and OCCREID_SLURMD_PORT"
fi
mkdir -p /etc/slurm
ln -sfn "$conf" "$etc_conf"

slurmctld -f "$conf"
wait_for 30 "slurmctld (scontrol ping)" sh -c 'scontrol ping | grep -q UP'
slurmd -f "$conf"
node_state() { sinfo -h -N -n "$node_name" -o %T 2>/dev/null | head -n 1; }
for _ in $(seq 60); do
  case "$(node_state)" in
    idle*|mixed*|allocated*) break ;;
    down*|drain*) scontrol update NodeName="$node_name" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.5
done
case "$(node_state)" in idle*|mixed*|allocated*) ;; *) die "node $node_name is '$(node_state)', not idle (see $dir/slurmd.log)";; esac
say "cluster 'occreid' up: node $node_name ($(sinfo -h -N -o '%c CPUs, %m MB')), partition main, config $etc_conf"
