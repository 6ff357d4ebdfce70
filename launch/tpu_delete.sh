#!/usr/bin/env bash
# Delete a TPU slice's queued resource together with its node (stops the billing).
set -euo pipefail

usage="Usage: $(basename -- "$0") --name NAME --project PROJECT --zone ZONE [--yes] [--async]
       [--dry-run]

Delete the queued resource and its TPU VM node (gcloud ... queued-resources delete --force).
Everything on the workers' disks is lost; the workdir in gs:// stays.

  --yes     do not ask for confirmation (gcloud --quiet)
  --async   return without waiting for the deletion to finish
  --name, --project, --zone, --dry-run   as in tpu_create.sh"

# shellcheck source-path=SCRIPTDIR
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

YES=0
ASYNC=0
while (($#)); do
  case $1 in
    --yes) YES=1; TAKEN=1 ;;
    --async) ASYNC=1; TAKEN=1 ;;
    *) common_option "$@" ;;
  esac
  shift "$TAKEN"
done

require_tpu_target
command=(gcloud compute tpus queued-resources delete "$NAME" "${GCLOUD_SCOPE[@]}" --force)
if ((ASYNC)); then
  command+=(--async)
fi
if ((YES)); then
  command+=(--quiet)
fi
run "${command[@]}"
