#!/usr/bin/env bash
# Ask for a TPU VM pod slice through a queued resource (the node gets the same name).
set -euo pipefail

usage="Usage: $(basename -- "$0") --name NAME --project PROJECT --zone ZONE --accelerator TYPE
       [--runtime VERSION] [--spot | --reserved] [--dry-run] [-- GCLOUD_FLAG...]

Queue a request for a TPU VM slice: gcloud compute tpus queued-resources create.
The queued resource and its node are both called NAME; watch it with tpu_status.sh.

  --name NAME          queued resource and node name (default: \$IMAGEN_JAX_TPU_NAME)
  --project PROJECT    Google Cloud project (default: \$IMAGEN_JAX_PROJECT)
  --zone ZONE          zone that has the accelerator (default: \$IMAGEN_JAX_ZONE)
  --accelerator TYPE   v4-256, v5litepod-64 (v5e-64 is accepted and written so), v5p-128, v6e-256, ...
  --runtime VERSION    TPU software version; default by generation:
                         v6e -> v2-alpha-tpuv6e, v5p -> v2-alpha-tpuv5,
                         v5e -> v2-alpha-tpuv5-lite, v2/v3/v4 -> tpu-ubuntu2204-base
  --spot               Spot capacity: cheaper, can be preempted at any time
  --reserved           use the project's reservation
  --dry-run            print the gcloud command instead of running it
  -- GCLOUD_FLAG...    passed on to gcloud (e.g. --network=NET --valid-until-duration=6h)"

# shellcheck source-path=SCRIPTDIR
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

ACCELERATOR=
RUNTIME=
SPOT=0
RESERVED=0
EXTRA=()
while (($#)); do
  case $1 in
    --accelerator | --accelerator=*) take_value "$@"; ACCELERATOR=$VALUE ;;
    --runtime | --runtime=*) take_value "$@"; RUNTIME=$VALUE ;;
    --spot) SPOT=1; TAKEN=1 ;;
    --reserved) RESERVED=1; TAKEN=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) common_option "$@" ;;
  esac
  shift "$TAKEN"
done

require_tpu_target
require "$ACCELERATOR" --accelerator
if ((SPOT && RESERVED)); then
  die "--spot and --reserved exclude each other: give one"
fi

# Cloud TPU calls v5e slices v5litepod-N.
if [[ $ACCELERATOR =~ ^v5e-([0-9]+)$ ]]; then
  ACCELERATOR=v5litepod-${BASH_REMATCH[1]}
fi
if [[ -z $RUNTIME ]]; then
  case $ACCELERATOR in
    v6e-*) RUNTIME=v2-alpha-tpuv6e ;;
    v5p-*) RUNTIME=v2-alpha-tpuv5 ;;
    v5litepod-*) RUNTIME=v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) RUNTIME=tpu-ubuntu2204-base ;;
    *) die "no default runtime for accelerator '$ACCELERATOR': give --runtime VERSION (gcloud compute tpus tpu-vm versions list)" ;;
  esac
fi

command=(gcloud compute tpus queued-resources create "$NAME" --node-id "$NAME" "${GCLOUD_SCOPE[@]}"
  --accelerator-type "$ACCELERATOR" --runtime-version "$RUNTIME")
if ((SPOT)); then
  command+=(--spot)
fi
if ((RESERVED)); then
  command+=(--reserved)
fi
run "${command[@]}" "${EXTRA[@]}"
