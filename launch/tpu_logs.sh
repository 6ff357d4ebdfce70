#!/usr/bin/env bash
# Print (or follow) the training log of a run on one worker or on all of them.
set -euo pipefail

usage="Usage: $(basename -- "$0") --name NAME --project PROJECT --zone ZONE [--run RUN]
       [--worker N|all] [--lines N] [--follow] [--dry-run]

Tail ~/imagen_jax_logs/RUN.log on the workers.

  --run RUN        run name (default: the run whose log changed last, on each worker)
  --worker N|all   which worker (default: 0)
  --lines N        how many lines (default: 100)
  --follow         keep printing new lines until interrupted (tail -F)
  --name, --project, --zone, --dry-run   as in tpu_create.sh"

# shellcheck source-path=SCRIPTDIR
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

RUN=
WORKER=0
LINES=100
FOLLOW=0
while (($#)); do
  case $1 in
    --run | --run=*) take_value "$@"; RUN=$VALUE ;;
    --worker | --worker=*) take_value "$@"; WORKER=$VALUE ;;
    --lines | --lines=*) take_value "$@"; LINES=$VALUE ;;
    --follow) FOLLOW=1; TAKEN=1 ;;
    *) common_option "$@" ;;
  esac
  shift "$TAKEN"
done

require_tpu_target
if [[ ! $WORKER =~ ^([0-9]+|all)$ ]]; then
  die "--worker expects a worker number or 'all', got '$WORKER'"
fi
if [[ ! $LINES =~ ^[0-9]+$ ]]; then
  die "--lines expects a number, got '$LINES'"
fi
log="\"\$(ls -t $LOG_DIR/*.log | head -n 1)\""
if [[ -n $RUN ]]; then
  require_run_name "$RUN"
  log=$LOG_DIR/$RUN.log
fi
tail_flags="-n $LINES"
if ((FOLLOW)); then
  tail_flags+=" -F"
fi
tpu_ssh "$WORKER" "tail $tail_flags $log"
