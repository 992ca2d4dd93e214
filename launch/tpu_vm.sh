#!/usr/bin/env bash
# Cloud TPU VM launcher for ditjax: create or reuse a TPU VM (slice), install ditjax on every
# worker, start training on all workers at once, follow logs, stop, ssh, delete.
#
#   launch/tpu_vm.sh create --name=dit --zone=us-east5-a --type=v5p-32 [--spot]
#   launch/tpu_vm.sh setup  --name=dit --zone=us-east5-a --repo=https://github.com/ORG/ditjax
#   launch/tpu_vm.sh train  --name=dit --zone=us-east5-a --config=configs/xl2.py \
#       --workdir=gs://BUCKET/runs/xl2 -- --config.dataset_dir=gs://BUCKET/imagenet256_latents
#   launch/tpu_vm.sh logs|stop|ssh|delete --name=dit --zone=us-east5-a [--worker=N]
#
# --dry-run (or DRY_RUN=1) prints every command instead of running it.
set -euo pipefail

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

die() {
  echo "error: $*" >&2
  exit 2
}

COMMAND="${1:-}"
[[ -z "${COMMAND}" || "${COMMAND}" == -* ]] && usage
shift

NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
TYPE="${TPU_TYPE:-}"
VERSION="${TPU_VERSION:-}"
CONFIG="${CONFIG:-configs/xl2.py}"
WORKDIR="${WORKDIR:-}"
REPO="${REPO:-}"
BRANCH="${BRANCH:-main}"
WORKER="${WORKER:-0}"
SPOT=0
DRY_RUN="${DRY_RUN:-0}"
EXTRA=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name=*) NAME="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --type=*) TYPE="${1#*=}" ;;
    --version=*) VERSION="${1#*=}" ;;
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --repo=*) REPO="${1#*=}" ;;
    --branch=*) BRANCH="${1#*=}" ;;
    --worker=*) WORKER="${1#*=}" ;;
    --spot) SPOT=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option $1" ;;
  esac
  shift
done

run() {
  if [[ "${DRY_RUN}" == 1 ]]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

require() {
  local flag="$1" value="$2"
  [[ -n "${value}" ]] || die "missing --${flag} (needed by '${COMMAND}')"
}

# The TPU software version for an accelerator type unless --version says otherwise.
default_version() {
  case "$1" in
    v4-*) echo "tpu-ubuntu2204-base" ;;
    v5litepod-*|v5e-*) echo "v2-alpha-tpuv5-lite" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    *) echo "tpu-ubuntu2204-base" ;;
  esac
}

ssh_all() {
  run gcloud compute tpus tpu-vm ssh "${NAME}" --zone="${ZONE}" --worker=all --command="$1"
}

LOG=ditjax_train.log

require name "${NAME}"
require zone "${ZONE}"

case "${COMMAND}" in
  create)
    require type "${TYPE}"
    if [[ "${DRY_RUN}" != 1 ]] &&
      gcloud compute tpus tpu-vm describe "${NAME}" --zone="${ZONE}" >/dev/null 2>&1; then
      echo "TPU VM ${NAME} already exists in ${ZONE}; reusing it"
      exit 0
    fi
    args=(gcloud compute tpus tpu-vm create "${NAME}" --zone="${ZONE}"
      --accelerator-type="${TYPE}" --version="${VERSION:-$(default_version "${TYPE}")}")
    [[ "${SPOT}" == 1 ]] && args+=(--spot)
    run "${args[@]}"
    ;;
  setup)
    require repo "${REPO}"
    ssh_all "set -e; if [ -d ditjax ]; then git -C ditjax fetch -q origin ${BRANCH} && git -C ditjax checkout -q ${BRANCH} && git -C ditjax pull -q; else git clone -q -b ${BRANCH} ${REPO} ditjax; fi; cd ditjax && python3 -m venv .venv && .venv/bin/pip install -q -U pip && .venv/bin/pip install -q -e . 'jax[tpu]'"
    ;;
  train)
    require workdir "${WORKDIR}"
    overrides=""
    if [[ ${#EXTRA[@]} -gt 0 ]]; then
      overrides="$(printf ' %q' "${EXTRA[@]}")"
    fi
    ssh_all "cd ditjax && nohup .venv/bin/python -m ditjax.train --config=${CONFIG} --workdir=${WORKDIR}${overrides} > ~/${LOG} 2>&1 &"
    ;;
  logs)
    run gcloud compute tpus tpu-vm ssh "${NAME}" --zone="${ZONE}" --worker="${WORKER}" \
      --command="tail -n 200 -f ~/${LOG}"
    ;;
  stop)
    # SIGTERM: ditjax saves a checkpoint at the next step and exits.
    ssh_all "pkill -TERM -f 'ditjax.train' || true"
    ;;
  ssh)
    run gcloud compute tpus tpu-vm ssh "${NAME}" --zone="${ZONE}" --worker="${WORKER}"
    ;;
  delete)
    run gcloud compute tpus tpu-vm delete "${NAME}" --zone="${ZONE}" --quiet
    ;;
  *)
    die "unknown command ${COMMAND} (create, setup, train, logs, stop, ssh, delete)"
    ;;
esac
