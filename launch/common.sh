# shellcheck shell=bash disable=SC2034  # (SC2034: its globals are read by the scripts that source it)
# Shared by the launch/ scripts (sourced, never run): option helpers, shell quoting, and
# `run`, which prints a command (--dry-run) or prints and executes it.
#
# A script sets `usage` (its --help text) before sourcing this file, then parses its
# options in a `case` loop that ends with `*) common_option "$@" ;;` and `shift "$TAKEN"`.

: "${usage:?a launch script sets usage before sourcing common.sh}"
SCRIPT_NAME=$(basename -- "$0")
DRY_RUN=0
# Defaults from the environment, so a session can set them once for every script.
NAME=${IMAGEN_JAX_TPU_NAME:-}
PROJECT=${IMAGEN_JAX_PROJECT:-}
ZONE=${IMAGEN_JAX_ZONE:-}
TAKEN=0  # how many words the last option consumed
VALUE=   # the value take_value read

die() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 2
}

warn() {
  printf '%s: warning: %s\n' "$SCRIPT_NAME" "$*" >&2
}

# Empty arrays under `set -u` need bash 4.4 (macOS ships 3.2).
if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  die "needs bash >= 4.4, this is $BASH_VERSION (macOS: brew install bash)"
fi

# shell_quote WORD... -> a line that a POSIX shell splits back into the same words.
# Same rule as Python's shlex.quote: a word made only of [A-Za-z0-9@%+=:,./_-] stays bare,
# anything else is single-quoted with each ' written as '"'"'.
shell_quote() {
  local words=() word escaped q="'\"'\"'"
  local LC_ALL=C  # ASCII letters only, whatever the locale's collation
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9@%+=:,./_-]+$ ]]; then
      words+=("$word")
    else
      escaped=${word//\'/$q}
      words+=("'$escaped'")
    fi
  done
  local IFS=' '
  printf '%s\n' "${words[*]}"
}

# run CMD ARG...: with --dry-run print the command (quoted, one line, on stdout) and do
# nothing; otherwise print it on stderr prefixed by "+ " and execute it.
run() {
  if ((DRY_RUN)); then
    shell_quote "$@"
  else
    printf '+ %s' "$(shell_quote "$@")" >&2
    printf '\n' >&2
    "$@"
  fi
}

# take_value "$@": read the value of option $1, given as `--opt=value` or `--opt value`.
take_value() {
  if [[ $1 == *=* ]]; then
    VALUE=${1#*=}
    TAKEN=1
  elif (($# >= 2)); then
    VALUE=$2
    TAKEN=2
  else
    die "$1 needs a value (see --help)"
  fi
}

# common_option "$@": the options every script takes; anything else is an error.
common_option() {
  case $1 in
    --name | --name=*) take_value "$@"; NAME=$VALUE ;;
    --project | --project=*) take_value "$@"; PROJECT=$VALUE ;;
    --zone | --zone=*) take_value "$@"; ZONE=$VALUE ;;
    --dry-run) DRY_RUN=1; TAKEN=1 ;;
    -h | --help) printf '%s\n' "$usage"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
}

# require VALUE OPTION [ENV_VAR]: stop with one message naming the missing option.
require() {
  if [[ -z $1 ]]; then
    if [[ -n ${3:-} ]]; then
      die "$2 is required (or set $3)"
    fi
    die "$2 is required"
  fi
}

# require_tpu_target: --name, --project and --zone are set; fills GCLOUD_SCOPE.
require_tpu_target() {
  require "$NAME" --name IMAGEN_JAX_TPU_NAME
  require "$PROJECT" --project IMAGEN_JAX_PROJECT
  require "$ZONE" --zone IMAGEN_JAX_ZONE
  GCLOUD_SCOPE=(--project "$PROJECT" --zone "$ZONE")
}

# require_run_name RUN: a run name is part of file names on the workers.
require_run_name() {
  if [[ ! $1 =~ ^[A-Za-z0-9._-]+$ ]]; then
    die "run name '$1' may only hold letters, digits, '.', '_' and '-': give --run NAME"
  fi
}

# tpu_ssh WORKER REMOTE_COMMAND: run a shell command on the TPU VM workers (0, 1, ... or all).
tpu_ssh() {
  run gcloud compute tpus tpu-vm ssh "$NAME" --worker="$1" "${GCLOUD_SCOPE[@]}" --command "$2"
}

# Where runs keep their files on each worker, relative to the home directory (where ssh
# commands start): run R logs to imagen_jax_logs/R.log, its process id is in
# imagen_jax_logs/R.pid, and its copied config files are in imagen_jax_runs/R/configs/.
LOG_DIR=imagen_jax_logs
RUNS_DIR=imagen_jax_runs
# Where tpu_setup.sh --gcsfuse mounts bucket B on every worker: $GCS_MOUNT/B. tpu_train.sh
# passes it to training as IMAGEN_JAX_GCS_MOUNT (datasets on gs:// are read there).
GCS_MOUNT=/gcs
