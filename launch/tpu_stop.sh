#!/usr/bin/env bash
# Stop training runs on every worker of a TPU slice (the slice itself keeps running).
set -euo pipefail

usage="Usage: $(basename -- "$0") --name NAME --project PROJECT --zone ZONE [--run RUN]
       [--signal TERM|INT|KILL] [--dry-run]

Send a signal to the process group of each live run started by tpu_train.sh, on every
worker. The slice keeps running (and billing): tpu_delete.sh releases it.

  --run RUN        only this run (default: every run on the workers)
  --signal SIG     TERM (default), INT, or KILL for a process that ignores TERM
  --name, --project, --zone, --dry-run   as in tpu_create.sh"

# shellcheck source-path=SCRIPTDIR
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

RUN=
SIGNAL=TERM
while (($#)); do
  case $1 in
    --run | --run=*) take_value "$@"; RUN=$VALUE ;;
    --signal | --signal=*) take_value "$@"; SIGNAL=$VALUE ;;
    *) common_option "$@" ;;
  esac
  shift "$TAKEN"
done

require_tpu_target
case $SIGNAL in
  TERM | INT | KILL) ;;
  *) die "--signal expects TERM, INT or KILL, got '$SIGNAL'" ;;
esac
pid_files="$LOG_DIR/*.pid"
if [[ -n $RUN ]]; then
  require_run_name "$RUN"
  pid_files=$LOG_DIR/$RUN.pid
fi

remote="for f in $pid_files; do [ -e \"\$f\" ] || continue; pid=\$(cat \"\$f\")"
remote+="; if kill -0 \"\$pid\" 2>/dev/null; then kill -$SIGNAL -- \"-\$pid\""
remote+=" && echo \"\$(hostname): sent $SIGNAL to run \$(basename \"\$f\" .pid) (process group \$pid)\"; fi; done"
tpu_ssh all "$remote"
