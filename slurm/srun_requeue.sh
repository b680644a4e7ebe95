# Sourced by slurm/*.sbatch (bash). Defines run_ranks_with_requeue CMD...:
#   `srun --kill-on-bad-exit=1 [SRUN_ARGS array] CMD` runs CMD once per task; each task is one torch.distributed
#   rank with torchrun-style RANK / LOCAL_RANK / WORLD_SIZE / LOCAL_WORLD_SIZE (from SLURM_PROCID / SLURM_LOCALID /
#   SLURM_NTASKS) and MASTER_ADDR / MASTER_PORT (first node, port from the job id): no torchrun needed.
#   When the batch shell receives USR1 (#SBATCH --signal=B:USR1@SECONDS, before the time limit) it forwards USR1
#   to the ranks through srun and waits for them to end: an entry point that handles USR1 saves and exits; one that
#   does not dies and later resumes from its last periodic checkpoint. After at most REQUEUE_GRACE_S seconds
#   (default 90: keep it below the signal's lead time) it runs `scontrol requeue`, which also ends ranks that
#   ignored the signal; the requeued run resumes from its run folder. A job requeued from outside (scontrol
#   requeue, preemption) is simply restarted by SLURM.

run_ranks_with_requeue() {
  local srun_pid rc
  [[ -v SRUN_ARGS ]] || SRUN_ARGS=()
  MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
  export MASTER_ADDR
  export MASTER_PORT=${MASTER_PORT:-$((15000 + SLURM_JOB_ID % 20000))}
  _A2MIM_REQUEUE=0 _A2MIM_SIGNALLED_AT=0
  # shellcheck disable=SC2317
  _a2mim_on_usr1() {
    _A2MIM_REQUEUE=1
    _A2MIM_SIGNALLED_AT=$SECONDS
    echo "[srun_requeue] $(date '+%F %T') USR1: time limit near; forwarding to the ranks, then requeue" >&2
    kill -USR1 "$srun_pid" 2>/dev/null
  }
  trap _a2mim_on_usr1 USR1
  echo "[srun_requeue] $(date '+%F %T') job $SLURM_JOB_ID run $((${SLURM_RESTART_COUNT:-0} + 1)) on" \
       "$SLURM_JOB_NODELIST, master $MASTER_ADDR:$MASTER_PORT: srun ${SRUN_ARGS[*]} $*" >&2
  # single quotes on purpose: the SLURM_* variables are expanded per task, inside srun
  # shellcheck disable=SC2016
  srun --kill-on-bad-exit=1 "${SRUN_ARGS[@]}" bash -c \
    'export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS
     export LOCAL_WORLD_SIZE=$(( SLURM_NTASKS / SLURM_NNODES )); exec "$@"' rank "$@" &
  srun_pid=$!
  wait "$srun_pid"; rc=$?   # returns when srun ends, or early when the USR1 trap has run
  while kill -0 "$srun_pid" 2>/dev/null; do   # after USR1: give the ranks time to save and exit
    if (( SECONDS - _A2MIM_SIGNALLED_AT >= ${REQUEUE_GRACE_S:-90} )); then
      echo "[srun_requeue] $(date '+%F %T') ranks still running ${REQUEUE_GRACE_S:-90} s after USR1" >&2
      break
    fi
    sleep 1
  done
  kill -0 "$srun_pid" 2>/dev/null || { wait "$srun_pid"; rc=$?; }
  trap - USR1
  if (( _A2MIM_REQUEUE )); then
    echo "[srun_requeue] $(date '+%F %T') ranks status $rc: scontrol requeue $SLURM_JOB_ID" >&2
    scontrol requeue "$SLURM_JOB_ID"
    return 0
  fi
  return "$rc"
}
