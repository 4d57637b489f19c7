#!/usr/bin/env bash
# Install a single-node SLURM (munge, slurmctld, slurmd, client tools) from Debian's packages, if missing.
#
# Used by the SLURM test (tests/test_slurm_executor.py) and by anyone who wants to try the SLURM profile on
# one machine. The packages' install scripts start nothing without systemd: scripts/slurm/up.sh does that.
# Exit status: 0 installed (or already there), 3 cannot install here (not root, not Debian/apt, apt failed)
# — the test skips on 3 and shows the reason printed on stderr.
set -euo pipefail
need=(munged slurmctld slurmd sbatch squeue scontrol sinfo)
missing=()
for tool in "${need[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "slurm: already installed ($(PATH="$PATH:/usr/sbin" slurmctld -V 2>/dev/null || echo unknown version))" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "slurm: missing ${missing[*]} and not root: cannot apt-get install (run as root, or install munge slurmctld slurmd slurm-client)" >&2
  exit 3
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "slurm: missing ${missing[*]} and no apt-get on this system (install munge + SLURM with its package manager)" >&2
  exit 3
fi
echo "slurm: installing munge slurmctld slurmd slurm-client (missing: ${missing[*]})" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends munge slurmctld slurmd slurm-client; } >&2; then
  echo "slurm: apt-get failed (no network to the Debian mirror?)" >&2
  exit 3
fi
echo "slurm: installed $(slurmctld -V 2>/dev/null || true)" >&2
