#!/usr/bin/env bash
# Start `imagen-jax train` on every worker of a TPU VM slice, in the background, logged.
set -euo pipefail

usage="Usage: $(basename -- "$0") --name NAME --project PROJECT --zone ZONE
       --config CONFIG.py --workdir DIR [--run RUN] [--env KEY=VALUE]... [--python PYTHON]
       [--no-copy-config] [--dry-run] [--config.KEY=VALUE]... [--override] [-- TRAIN_ARG...]

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
  --name, --project, --zone, --dry-run   as in tpu_create.sh"

# shellcheck source-path=SCRIPTDIR
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

CONFIG=
WORKDIR=
RUN=
PYTHON=python3
COPY_CONFIG=1
ENV_VARS=()
TRAIN_ARGS=()
while (($#)); do
  case $1 in
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
  config_dir=$(dirname -- "$config_file")
  config_files=("$config_dir"/*.py)
  remote_config_dir=$RUNS_DIR/$RUN/configs
  tpu_ssh all "$(shell_quote mkdir -p "$remote_config_dir")"
  run gcloud compute tpus tpu-vm scp "${config_files[@]}" "$NAME:$remote_config_dir/" --worker=all "${GCLOUD_SCOPE[@]}"
  CONFIG=$remote_config_dir/$(basename -- "$config_file")$config_parameter
fi

train=(env "IMAGEN_JAX_GCS_MOUNT=$GCS_MOUNT" "${ENV_VARS[@]}")
train+=("$PYTHON" -m imagen_jax.cli train --config "$CONFIG" --workdir "$WORKDIR" --no-progress "${TRAIN_ARGS[@]}")

# The remote script (run by each worker's login shell, in the home directory):
# refuse while a run is alive, then start one detached (setsid: its own process group,
# so tpu_stop.sh can signal it with its children) and record its pid.
log=$LOG_DIR/$RUN.log
pid=$LOG_DIR/$RUN.pid
remote="mkdir -p $LOG_DIR"
remote+="; for f in $LOG_DIR/*.pid; do if [ -e \"\$f\" ] && kill -0 \"\$(cat \"\$f\")\" 2>/dev/null; then"
remote+=" echo \"\$(hostname): run \$(basename \"\$f\" .pid) is still running; stop it with tpu_stop.sh\" >&2; exit 1; fi; done"
remote+="; echo \"=== \$(date -u +%FT%TZ) \$(hostname): start $RUN\" >> $log"
remote+="; setsid nohup $(shell_quote "${train[@]}") >> $log 2>&1 < /dev/null & echo \$! > $pid"
remote+="; echo \"\$(hostname): started $RUN, pid \$(cat $pid), log ~/$log\""
tpu_ssh all "$remote"
