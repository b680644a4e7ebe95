#!/usr/bin/env bash
# Stop the test cluster started by slurm/cluster/start.sh: cancel its jobs, then stop slurmd, slurmctld, slurmdbd,
# mariadbd and munged by the PIDs in BASE/run/*.pid (never by name; a pid file whose process is not the named
# daemon any more is ignored).
# Usage: slurm/cluster/stop.sh [BASE] [--purge]     --purge also deletes BASE (config, key, state, DB, logs)
set -uo pipefail

PURGE=0; ARG=""
for a in "$@"; do
  case "$a" in --purge) PURGE=1;; -*) echo "usage: $0 [BASE] [--purge]" >&2; exit 2;; *) ARG=$a;; esac
done
BASE=$(realpath -m "${ARG:-${SLURM_TEST_BASE:-${TMPDIR:-/tmp}/a2mim-slurm}}")
RUN=$BASE/run
export SLURM_CONF=$BASE/etc/slurm.conf

alive() { [[ -s "$2" ]] && [[ "$(cat "/proc/$(cat "$2")/comm" 2>/dev/null)" == "$1"* ]]; }

stop_daemons() {  # NAME:PIDFILE ...: TERM them together, wait up to 15 s, then KILL what is left
  local item name pf pid pids=() names=()
  for item in "$@"; do
    name=${item%%:*}; pf=${item#*:}
    if alive "$name" "$pf"; then pid=$(cat "$pf"); kill -TERM "$pid"; pids+=("$pid"); names+=("$name"); fi
    rm -f "$pf"
  done
  for i in "${!pids[@]}"; do
    for _ in $(seq 150); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "${names[$i]} (pid ${pids[$i]}) ignored TERM for 15 s: KILL"; kill -KILL "${pids[$i]}"
    fi
    echo "${names[$i]} stopped (pid ${pids[$i]})"
  done
}

# cancel all jobs first, so that their slurmstepd and job processes end with the cluster
if alive slurmctld "$RUN/slurmctld.pid"; then
  ids=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [[ -n "${ids// /}" ]]; then
    echo "cancelling jobs: $ids"
    # shellcheck disable=SC2086
    scancel $ids 2>/dev/null || true
    for _ in $(seq 100); do [[ -z "$(squeue -h -t R,CG -o %A 2>/dev/null)" ]] && break; sleep 0.2; done
  fi
fi
# two waves (each ~2-3 s): the SLURM daemons, then what they use (accounting and authentication)
stop_daemons "slurmd:$RUN/slurmd.pid" "slurmctld:$RUN/slurmctld.pid"
stop_daemons "slurmdbd:$RUN/slurmdbd.pid" "mariadbd:$RUN/mariadb.pid" "munged:$RUN/munged.pid"
rm -f "$RUN/munge.socket.2" "$RUN/munge.socket.2.lock"

if (( PURGE )); then
  rm -rf "$BASE"
  echo "purged $BASE"
fi
