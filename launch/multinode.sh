#!/usr/bin/env bash
# Multi-node ditjax training without SLURM: run this once on every node (any launcher, ssh
# loop or container scheduler), with the same COORDINATOR and NUM_PROCESSES everywhere and
# PROCESS_ID = 0 .. NUM_PROCESSES-1. Process 0's host runs the coordinator.
#
#   COORDINATOR=10.0.0.1:8476 NUM_PROCESSES=4 PROCESS_ID=0 CONFIG=configs/xl2.py \
#       WORKDIR=/shared/runs/xl2 launch/multinode.sh --config.dataset_dir=/shared/latents
#   DRY_RUN=1 ... launch/multinode.sh   # print the command instead
set -euo pipefail

for var in COORDINATOR NUM_PROCESSES PROCESS_ID WORKDIR; do
  if [[ -z "${!var:-}" ]]; then
    echo "error: set ${var} (see the header of $0)" >&2
    exit 2
  fi
done
CONFIG="${CONFIG:-configs/xl2.py}"
PYTHON="${PYTHON:-.venv/bin/python}"

cmd=("${PYTHON}" -m ditjax.train "--config=${CONFIG}" "--workdir=${WORKDIR}"
  "--coordinator_address=${COORDINATOR}" "--num_processes=${NUM_PROCESSES}"
  "--process_id=${PROCESS_ID}" "$@")

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '+'
  printf ' %q' "${cmd[@]}"
  printf '\n'
  exit 0
fi
exec "${cmd[@]}"
