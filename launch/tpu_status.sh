#!/usr/bin/env bash
# Show a TPU slice's queued-resource state and, on each worker, the runs and their last log line.
set -euo pipefail

usage="Usage: $(basename -- "$0") --name NAME --project PROJECT --zone ZONE [--run RUN]
       [--queue-only] [--dry-run]

Print the queued resource (its state: WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE,
SUSPENDED, FAILED, ...), then one line per worker and run started by tpu_train.sh:
'HOST RUN running|stopped: LAST LOG LINE'.

  --run RUN      only this run (default: every run on the workers)
  --queue-only   only the queued resource; no ssh (use it while the slice is not ACTIVE)
  --name, --project, --zone, --dry-run   as in tpu_create.sh"

# shellcheck source-path=SCRIPTDIR
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

RUN=
QUEUE_ONLY=0
while (($#)); do
  case $1 in
    --run | --run=*) take_value "$@"; RUN=$VALUE ;;
    --queue-only) QUEUE_ONLY=1; TAKEN=1 ;;
    *) common_option "$@" ;;
  esac
  shift "$TAKEN"
done

require_tpu_target
pid_files="$LOG_DIR/*.pid"
if [[ -n $RUN ]]; then
  require_run_name "$RUN"
  pid_files=$LOG_DIR/$RUN.pid
fi

run gcloud compute tpus queued-resources describe "$NAME" "${GCLOUD_SCOPE[@]}"
if ((QUEUE_ONLY)); then
  exit 0
fi
remote="for f in $pid_files; do [ -e \"\$f\" ] || continue; run=\$(basename \"\$f\" .pid)"
remote+="; if kill -0 \"\$(cat \"\$f\")\" 2>/dev/null; then state=running; else state=stopped; fi"
remote+="; echo \"\$(hostname) \$run \$state: \$(tail -n 1 \"$LOG_DIR/\$run.log\" 2>/dev/null)\"; done"
tpu_ssh all "$remote"
