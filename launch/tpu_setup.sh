#!/usr/bin/env bash
# Install imagen-jax and JAX for TPU on every worker of a TPU VM slice.
set -euo pipefail

usage="Usage: $(basename -- "$0") --name NAME --project PROJECT --zone ZONE
       (--source PIP_SPEC | --wheel FILE) [--jax VERSION] [--python PYTHON]
       [--gcsfuse BUCKET]... [--dry-run]

Install the package on every worker (--worker=all), in one pip resolve with \"jax[tpu]\",
then check the install by printing the version on each worker.

  --source PIP_SPEC  what pip installs, e.g. 'git+https://github.com/ORG/imagen_jax@v0.1.0'
  --wheel FILE       a local wheel or sdist (python -m build): copied to each worker's home
                     directory with gcloud compute tpus tpu-vm scp, then installed from there
  --jax VERSION      pin JAX: installs \"jax[tpu]==VERSION\" (default: newest \"jax[tpu]\")
  --python PYTHON    interpreter on the workers (default: python3); give a virtualenv's
                     python (a path relative to the home directory, or absolute) to install there
  --gcsfuse BUCKET   install gcsfuse (Google's apt repository) and mount gs://BUCKET at
                     /gcs/BUCKET on every worker (repeatable): training reads datasets
                     and embedding caches on gs:// there (ArrayRecord reads local files)
  --name, --project, --zone, --dry-run   as in tpu_create.sh"

# shellcheck source-path=SCRIPTDIR
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

SOURCE=
WHEEL=
JAX_VERSION=
PYTHON=python3
BUCKETS=()
while (($#)); do
  case $1 in
    --source | --source=*) take_value "$@"; SOURCE=$VALUE ;;
    --wheel | --wheel=*) take_value "$@"; WHEEL=$VALUE ;;
    --jax | --jax=*) take_value "$@"; JAX_VERSION=$VALUE ;;
    --python | --python=*) take_value "$@"; PYTHON=$VALUE ;;
    --gcsfuse | --gcsfuse=*)
      take_value "$@"
      [[ $VALUE =~ ^[a-z0-9][a-z0-9._-]*$ ]] || die "--gcsfuse expects a bucket name (no gs://), got '$VALUE'"
      BUCKETS+=("$VALUE") ;;
    *) common_option "$@" ;;
  esac
  shift "$TAKEN"
done

require_tpu_target
if [[ -n $SOURCE && -n $WHEEL ]] || [[ -z $SOURCE && -z $WHEEL ]]; then
  die "give exactly one of --source PIP_SPEC and --wheel FILE"
fi
JAX_SPEC="jax[tpu]"
if [[ -n $JAX_VERSION ]]; then
  JAX_SPEC="jax[tpu]==$JAX_VERSION"
fi

if [[ -n $WHEEL ]]; then
  if [[ ! -f $WHEEL ]]; then
    die "--wheel '$WHEEL' is not a file: build one with 'python -m build' and give its path"
  fi
  if [[ $WHEEL != *.whl && $WHEEL != *.tar.gz ]]; then
    die "--wheel '$WHEEL' is neither a .whl nor a .tar.gz: build one with 'python -m build'"
  fi
  run gcloud compute tpus tpu-vm scp "$WHEEL" "$NAME:" --worker=all "${GCLOUD_SCOPE[@]}"
  SOURCE=./$(basename -- "$WHEEL")
fi

install=$(shell_quote "$PYTHON" -m pip install --upgrade "$SOURCE" "$JAX_SPEC")
check=$(shell_quote "$PYTHON" -m imagen_jax.cli --version)
tpu_ssh all "$install && $check"

if ((${#BUCKETS[@]})); then
  # gcsfuse from Google's apt repository, as Cloud Storage FUSE's install guide gives it.
  # shellcheck disable=SC2016  # $(lsb_release ...) is expanded on the worker
  repo='deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main'
  setup="curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null"
  setup+=" && echo \"$repo\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null"
  setup+=" && sudo apt-get update -qq && sudo apt-get install -y -qq fuse gcsfuse"
  for bucket in "${BUCKETS[@]}"; do
    mount_point=$GCS_MOUNT/$bucket
    setup+=" && sudo mkdir -p $mount_point && sudo chown \"\$(id -u):\$(id -g)\" $mount_point"
    setup+=" && { mountpoint -q $mount_point || gcsfuse --implicit-dirs $bucket $mount_point; }"
  done
  tpu_ssh all "$setup"
fi
