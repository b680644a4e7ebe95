#!/usr/bin/env bash
# Debian packages for the local test cluster (slurm 22.05 + munge + slurmdbd/mariadb). Idempotent; no-op when present.
set -euo pipefail
pkgs=()
for p in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge slurmdbd:slurmdbd mariadbd:mariadb-server; do
  command -v "${p%%:*}" >/dev/null || pkgs+=("${p#*:}")
done
(( ${#pkgs[@]} )) || exit 0
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
  echo "[setup] missing ${pkgs[*]}: install them (Debian: apt-get install ${pkgs[*]}); SLURM tests will fail without them" >&2
  exit 0
fi
echo "[setup] apt-get install ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
