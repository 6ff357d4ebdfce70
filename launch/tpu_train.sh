#!/usr/bin/env bash
# Start `imagen-jax train` on every worker of a TPU VM slice, in the background, logged.
set -euo pipefail

usage="Usage: $(basename -- "$0") --name NAME --project PROJECT --zone ZONE
       --config CONFIG.py --workdir DIR [--run RUN] [--env KEY=VALUE]... [--python PYTHON]
       [--no-copy-config] [--dry-run] [--config.KEY=VALUE]... [--override] [-- TRAIN_ARG...]
       [--restart --accelerator TYPE [--runtime V] [--spot | --reserved]
        (--source PIP_SPEC | --wheel FILE) [--jax V] [--gcsfuse BUCKET]...
        [--max-restarts N] [--poll SECONDS]]

Start training on all workers at once (each runs the same command; JAX joins them into
one multi-host job itself). The process runs under nohup in its own session, so it
outlives the ssh connection; it appends its output to ~/imagen_jax_logs/RUN.log and its
process id to ~/imagen_jax_logs/RUN.pid on each worker. Refuses to start while any
run started by this script is still alive on a worker (the TPU serves one process).

  --config CONFIG.py   experiment config (or CONFIG.py:PARAMETER, passed to get_config);
                       every .py file of its directory is copied to
                       ~/imagen_jax_runs/RUN/configs/ on each worker (so imports between
                       config files keep working), and the copy is what trains
  --no-copy-config     CONFIG.py is a path on the workers already: use it as it is
  --workdir DIR        run directory that every worker sees, normally gs://BUCKET/PATH
  --run RUN            run name for log and pid files (default: the last part of --workdir)
  --env KEY=VALUE      environment variable for the training process (repeatable),
                       e.g. --env LIBTPU_INIT_ARGS=--xla_tpu_enable_latency_hiding_scheduler=true
  --python PYTHON      interpreter on the workers (default: python3); the job runs
                       PYTHON -m imagen_jax.cli train, the same as the imagen-jax command
                       (which non-interactive ssh may not find on PATH)
  --config.KEY=VALUE (or --config.KEY VALUE), --override, and every word after --:
                       passed on to imagen-jax train, after --no-progress (the log gets
                       the logged metrics, not a progress bar)
  --name, --project, --zone, --dry-run   as in tpu_create.sh

Supervisor mode (--restart): start the run (the slice must be ACTIVE and set up), then
stay in the foreground and watch it every --poll seconds (default 60): the queued
resource's state, and on each worker whether the run is running or how it ended
(imagen-jax train --status-file: finished, preempted, failed; gone when it died without
saying). When every worker says finished, exit 0.
When the slice is no longer ACTIVE (a spot preemption, a failed host) the supervisor
deletes the queued resource, creates it again (tpu_create.sh with --accelerator,
--runtime, --spot/--reserved), waits until it is ACTIVE, installs the package
(tpu_setup.sh with --source/--wheel, --jax, --gcsfuse, --python) and starts the same
run with the same workdir, which resumes from its last checkpoint. When a worker's run
failed, was preempted or is gone on a slice that is still ACTIVE, the other workers' runs
are killed and the run is started again on the same slice. Each restart is logged on
stderr; after --max-restarts (default 10) the supervisor gives up with exit status 1.
Stop the supervisor (Ctrl-C) before stopping the run with tpu_stop.sh. With --dry-run it
prints the commands of the start, of one watch and of one restart after a preemption."

# shellcheck source-path=SCRIPTDIR
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

CONFIG=
WORKDIR=
RUN=
PYTHON=python3
COPY_CONFIG=1
ENV_VARS=()
TRAIN_ARGS=()
RESTART=0
MAX_RESTARTS=10
POLL=60
CREATE_ARGS=()
SETUP_ARGS=()
RESTART_ONLY=()  # the supervisor's options given, refused without --restart
while (($#)); do
  case $1 in
    --restart) RESTART=1; TAKEN=1 ;;
    --max-restarts | --max-restarts=*)
      take_value "$@"; RESTART_ONLY+=(--max-restarts)
      [[ $VALUE =~ ^[0-9]+$ ]] || die "--max-restarts expects a whole number, got '$VALUE'"
      MAX_RESTARTS=$VALUE ;;
    --poll | --poll=*)
      take_value "$@"; RESTART_ONLY+=(--poll)
      [[ $VALUE =~ ^([0-9]+|[0-9]*\.[0-9]+)$ && ! $VALUE =~ ^0*\.?0*$ ]] || die "--poll expects seconds > 0, got '$VALUE'"
      POLL=$VALUE ;;
    --accelerator | --accelerator=* | --runtime | --runtime=*)
      take_value "$@"; RESTART_ONLY+=("${1%%=*}"); CREATE_ARGS+=("${1%%=*}" "$VALUE") ;;
    --spot | --reserved) RESTART_ONLY+=("$1"); CREATE_ARGS+=("$1"); TAKEN=1 ;;
    --source | --source=* | --wheel | --wheel=* | --jax | --jax=* | --gcsfuse | --gcsfuse=*)
      take_value "$@"; RESTART_ONLY+=("${1%%=*}"); SETUP_ARGS+=("${1%%=*}" "$VALUE") ;;
    --config | --config=*) take_value "$@"; CONFIG=$VALUE ;;
    --workdir | --workdir=*) take_value "$@"; WORKDIR=$VALUE ;;
    --run | --run=*) take_value "$@"; RUN=$VALUE ;;
    --python | --python=*) take_value "$@"; PYTHON=$VALUE ;;
    --env | --env=*)
      take_value "$@"
      if [[ ! $VALUE =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then
        die "--env expects KEY=VALUE, got '$VALUE'"
      fi
      ENV_VARS+=("$VALUE") ;;
    --no-copy-config) COPY_CONFIG=0; TAKEN=1 ;;
    --config.*=* | --override) TRAIN_ARGS+=("$1"); TAKEN=1 ;;
    --config.*) take_value "$@"; TRAIN_ARGS+=("$1" "$VALUE") ;;
    --) shift; TRAIN_ARGS+=("$@"); break ;;
    *) common_option "$@" ;;
  esac
  shift "$TAKEN"
done

require_tpu_target
require "$CONFIG" --config
require "$WORKDIR" --workdir
if [[ -z $RUN ]]; then
  RUN=${WORKDIR%/}
  RUN=${RUN##*/}
fi
require_run_name "$RUN"
if ((RESTART)); then
  [[ " ${CREATE_ARGS[*]} " == *" --accelerator "* ]] || die "--restart needs --accelerator TYPE (to create the slice again after a preemption)"
  [[ " ${SETUP_ARGS[*]} " == *" --source "* || " ${SETUP_ARGS[*]} " == *" --wheel "* ]] \
    || die "--restart needs --source PIP_SPEC or --wheel FILE (to install the package on a new slice)"
elif ((${#RESTART_ONLY[@]})); then
  die "${RESTART_ONLY[0]} is an option of the supervisor mode: add --restart"
fi
if [[ $WORKDIR != gs://* ]]; then
  warn "--workdir '$WORKDIR' is not a gs:// path: every worker must see the same directory (a shared mount); a worker-local directory breaks multi-host checkpoints"
fi

if ((COPY_CONFIG)); then
  # CONFIG.py or CONFIG.py:PARAMETER (the ml_collections form that passes a string to get_config).
  config_file=$CONFIG
  config_parameter=
  if [[ $CONFIG == *.py:* ]]; then
    config_file=${CONFIG%%.py:*}.py
    config_parameter=:${CONFIG#*.py:}
  fi
  if [[ $config_file != *.py || ! -f $config_file ]]; then
    die "--config '$CONFIG' is not a .py file here: give a local config file, or --no-copy-config for a path on the workers"
  fi
  config_files=("$(dirname -- "$config_file")"/*.py)
  remote_config_dir=$RUNS_DIR/$RUN/configs
  CONFIG=$remote_config_dir/$(basename -- "$config_file")$config_parameter
fi

log=$LOG_DIR/$RUN.log
pid=$LOG_DIR/$RUN.pid
status=$LOG_DIR/$RUN.status
train=(env "IMAGEN_JAX_GCS_MOUNT=$GCS_MOUNT" "${ENV_VARS[@]}")
train+=("$PYTHON" -m imagen_jax.cli train --config "$CONFIG" --workdir "$WORKDIR" --no-progress)
train+=(--status-file "$status" "${TRAIN_ARGS[@]}")

# The remote script (run by each worker's login shell, in the home directory):
# refuse while a run is alive, then start one detached (setsid: its own process group,
# so tpu_stop.sh can signal it with its children) and record its pid; the previous
# attempt's status file goes first (the run writes a new one when it ends).
remote="mkdir -p $LOG_DIR"
remote+="; for f in $LOG_DIR/*.pid; do if [ -e \"\$f\" ] && kill -0 \"\$(cat \"\$f\")\" 2>/dev/null; then"
remote+=" echo \"\$(hostname): run \$(basename \"\$f\" .pid) is still running; stop it with tpu_stop.sh\" >&2; exit 1; fi; done"
remote+="; rm -f $status; echo \"=== \$(date -u +%FT%TZ) \$(hostname): start $RUN\" >> $log"
remote+="; setsid nohup $(shell_quote "${train[@]}") >> $log 2>&1 < /dev/null & echo \$! > $pid"
remote+="; echo \"\$(hostname): started $RUN, pid \$(cat $pid), log ~/$log\""

# start_run: copy the config files (unless --no-copy-config) and start the run on every worker.
start_run() {
  if ((COPY_CONFIG)); then
    tpu_ssh all "$(shell_quote mkdir -p "$remote_config_dir")"
    run gcloud compute tpus tpu-vm scp "${config_files[@]}" "$NAME:$remote_config_dir/" --worker=all "${GCLOUD_SCOPE[@]}"
  fi
  tpu_ssh all "$remote"
}

if ((!RESTART)); then
  start_run
  exit 0
fi

# ---------------------------------------------------------------- supervisor mode (--restart)

LAUNCH_DIR=$(dirname -- "${BASH_SOURCE[0]}")
TARGET_ARGS=(--name "$NAME" --project "$PROJECT" --zone "$ZONE")
if ((DRY_RUN)); then
  TARGET_ARGS+=(--dry-run)
fi

# On each worker, one line "run-state HOST STATE": running, finished, preempted, failed
# (the first word of the status file the run wrote when it ended), or gone (no process
# and no status: killed, or the machine restarted).
state_remote="if [ -e $pid ] && kill -0 \"\$(cat $pid)\" 2>/dev/null; then s=running"
state_remote+="; elif [ -s $status ]; then s=\$(head -n 1 $status | cut -d: -f1); else s=gone; fi"
state_remote+="; echo \"run-state \$(hostname) \$s\""

note() {
  printf '%s: %s %s\n' "$SCRIPT_NAME" "$(date -u +%FT%TZ)" "$*" >&2
}

# slice_state: the queued resource's state (ACTIVE, SUSPENDED, FAILED, ...), or UNKNOWN.
slice_state() {
  run gcloud compute tpus queued-resources describe "$NAME" "${GCLOUD_SCOPE[@]}" --format='value(state.state)' \
    || echo UNKNOWN
}

# recreate_slice: delete the queued resource, create it again, wait until ACTIVE, set up.
recreate_slice() {
  bash "$LAUNCH_DIR/tpu_delete.sh" "${TARGET_ARGS[@]}" --yes || note "deleting the old queued resource failed; creating anyway"
  bash "$LAUNCH_DIR/tpu_create.sh" "${TARGET_ARGS[@]}" "${CREATE_ARGS[@]}" || return 1
  local state previous=
  while true; do
    state=$(slice_state)
    if ((DRY_RUN)); then
      printf '%s\n' "$state"
      break
    fi
    [[ $state == "$previous" ]] || note "queued resource $NAME: $state"
    previous=$state
    case $state in
      ACTIVE) break ;;
      FAILED | SUSPENDED | SUSPENDING | DELETING | UNKNOWN) return 1 ;;
    esac
    sleep "$POLL"  # WAITING_FOR_RESOURCES, PROVISIONING, ...: spot capacity can take hours
  done
  bash "$LAUNCH_DIR/tpu_setup.sh" "${TARGET_ARGS[@]}" "${SETUP_ARGS[@]}" --python "$PYTHON" || return 1
}

if ((DRY_RUN)); then
  echo "# start"
  start_run
  echo "# watch, every $POLL s"
  slice_state
  tpu_ssh all "$state_remote"
  echo "# restart after a preemption (at most $MAX_RESTARTS)"
  recreate_slice
  start_run
  exit 0
fi

state=$(slice_state 2>/dev/null)
if [[ $state != ACTIVE ]]; then
  die "queued resource $NAME is $state, not ACTIVE: start the supervisor once the slice is ACTIVE and set up (tpu_create.sh, tpu_status.sh --queue-only, tpu_setup.sh)"
fi
restarts=0
start_run
while true; do
  sleep "$POLL"
  state=$(slice_state 2>/dev/null)
  recreate=0
  reason=
  if [[ $state != ACTIVE ]]; then
    recreate=1
    reason="the slice is $state (preempted, or a host failed)"
  else
    if ! states=$(tpu_ssh all "$state_remote" 2>/dev/null); then
      note "could not read the run's state on every worker; trying again in $POLL s"
      continue
    fi
    tally=$(grep '^run-state ' <<<"$states" | awk '{print $3}' | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}')
    tally=${tally%, }
    if [[ -z $tally ]]; then
      note "no worker reported the run's state; trying again in $POLL s"
      continue
    fi
    if ! grep '^run-state ' <<<"$states" | grep -qv ' finished$'; then
      note "run $RUN finished on every worker ($tally)"
      exit 0
    fi
    if ! grep '^run-state ' <<<"$states" | grep -Eqv ' (running|finished)$'; then
      continue  # still running (a worker that finished first waits for the others)
    fi
    reason="workers: $tally"
  fi
  if ((restarts >= MAX_RESTARTS)); then
    note "giving up after $restarts restarts: $reason"
    exit 1
  fi
  restarts=$((restarts + 1))
  note "restart $restarts of at most $MAX_RESTARTS: $reason"
  if ((recreate)); then
    until recreate_slice; do
      if ((restarts >= MAX_RESTARTS)); then
        note "giving up after $restarts restarts: the new slice did not become ACTIVE"
        exit 1
      fi
      restarts=$((restarts + 1))
      note "restart $restarts of at most $MAX_RESTARTS: the new slice did not become ACTIVE"
    done
  else
    bash "$LAUNCH_DIR/tpu_stop.sh" "${TARGET_ARGS[@]}" --run "$RUN" --signal KILL >/dev/null || true
  fi
  start_run
done
