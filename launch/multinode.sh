#!/usr/bin/env bash
# ditjax training on several machines without a cluster scheduler: run this script once on
# every machine (by ssh, pdsh, a container orchestrator, ...) with the same COORDINATOR,
# NUM_PROCESSES, CONFIG and WORKDIR everywhere and a distinct PROCESS_ID on each.
#
#   COORDINATOR=10.0.0.1:8476 NUM_PROCESSES=4 PROCESS_ID=0 \
#   WORKDIR=/shared/runs/dit-xl2 launch/multinode.sh --config.dataset_dir=/shared/latents
#
# Environment:
#   COORDINATOR    HOST:PORT of process 0, reachable from every machine (required);
#                  process 0 listens on PORT
#   NUM_PROCESSES  number of processes in the job (required)
#   PROCESS_ID     this process's index, 0 .. NUM_PROCESSES-1 (required)
#   WORKDIR        run directory every process can reach: a shared filesystem or gs://
#                  (required); restarting with the same WORKDIR resumes the run
#   CONFIG         training config, relative to the checkout (configs/xl2.py)
#   DITJAX_DIR     the ditjax checkout (default: the parent of this script's directory)
#   PYTHON         interpreter (default: $DITJAX_DIR/.venv/bin/python, else python3)
#   DRY_RUN        1: print the command instead of running it
#
# Arguments go on to `python -m ditjax.train` (any --config.FIELD=VALUE). One process per
# machine drives all of its accelerators. The training process replaces this shell (exec),
# so a SIGTERM sent to it makes ditjax checkpoint at the next step and exit 0.
set -euo pipefail

usage_error() {
  echo "multinode.sh: $*" >&2
  exit 2
}

case "${DRY_RUN:-0}" in
  1 | true | yes) DRY_RUN=1 ;;
  *) DRY_RUN=0 ;;
esac

[[ -n "${COORDINATOR:-}" ]] ||
  usage_error "missing COORDINATOR: set it to HOST:PORT of process 0, e.g. 10.0.0.1:8476"
[[ -n "${NUM_PROCESSES:-}" ]] ||
  usage_error "missing NUM_PROCESSES: set it to the number of processes in the job"
[[ -n "${PROCESS_ID:-}" ]] ||
  usage_error "missing PROCESS_ID: set it to this process's index, 0 .. NUM_PROCESSES-1"
[[ -n "${WORKDIR:-}" ]] ||
  usage_error "missing WORKDIR: set it to a run directory that every process can reach"

[[ "${COORDINATOR}" =~ ^[^:]+:[0-9]+$ || "${COORDINATOR}" =~ ^\[[0-9A-Fa-f:.]+\]:[0-9]+$ ]] ||
  usage_error "COORDINATOR must be HOST:PORT, got '${COORDINATOR}'"
[[ "${NUM_PROCESSES}" =~ ^[0-9]+$ && "${NUM_PROCESSES}" -ge 1 ]] ||
  usage_error "NUM_PROCESSES must be a positive integer, got '${NUM_PROCESSES}'"
[[ "${PROCESS_ID}" =~ ^[0-9]+$ && "${PROCESS_ID}" -lt "${NUM_PROCESSES}" ]] ||
  usage_error "PROCESS_ID must be in 0 .. $((NUM_PROCESSES - 1)), got '${PROCESS_ID}'"

CONFIG="${CONFIG:-configs/xl2.py}"
DITJAX_DIR="${DITJAX_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "${DITJAX_DIR}/.venv/bin/python" ]]; then
    PYTHON="${DITJAX_DIR}/.venv/bin/python"
  else
    PYTHON=python3
  fi
fi

cmd=("${PYTHON}" -m ditjax.train "--config=${CONFIG}" "--workdir=${WORKDIR}"
  "--coordinator_address=${COORDINATOR}" "--num_processes=${NUM_PROCESSES}"
  "--process_id=${PROCESS_ID}" "$@")

# Prints a command as `+ cmd args`, quoting the arguments that need it.
show() {
  local out="+" arg
  for arg in "$@"; do
    if [[ "${arg}" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=" ${arg}"
    else
      out+=" '${arg//\'/\'\\\'\'}'"
    fi
  done
  printf '%s\n' "${out}"
}

if [[ "${DRY_RUN}" == 1 ]]; then
  show cd "${DITJAX_DIR}"
  show "${cmd[@]}"
  exit 0
fi

cd "${DITJAX_DIR}"
exec "${cmd[@]}"
