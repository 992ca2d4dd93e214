#!/usr/bin/env bash
# Cloud TPU VM launcher for ditjax: one TPU slice (single- or multi-host), driven from your
# own machine through gcloud. Every training process runs on the TPU workers; this script only
# sends commands to them.
#
# Usage: launch/tpu_vm.sh COMMAND [options] [-- extra ditjax.train flags]
#
# Commands:
#   create   create the TPU VM (reused when it already exists)
#   setup    clone or update ditjax on every worker, install it with jax[tpu] in ~/ditjax/.venv
#   sync     copy a bucket folder to the local disk of every worker (gcloud storage rsync)
#   train    start `python -m ditjax.train` on every worker in the background (nohup)
#   logs     follow the training log of one worker (default 0)
#   status   the TPU state and, on every worker, whether training runs
#   stop     SIGTERM the training on every worker (it checkpoints, then exits) and wait
#   ssh      open a shell on one worker (default 0)
#   delete   delete the TPU VM
#
# Options (each also read from the environment variable in brackets; --opt VALUE works too):
#   --name=NAME        TPU VM name                                  [TPU_NAME]
#   --zone=ZONE        zone, e.g. us-east5-a                        [TPU_ZONE]
#   --project=PROJECT  project (default: gcloud's configured one)   [TPU_PROJECT]
#   --type=TYPE        accelerator type: v4-32, v5litepod-16, v5p-32, v6e-16, ...  [TPU_TYPE]
#   --version=VERSION  TPU software version (default: picked from --type)  [TPU_VERSION]
#   --spot             create a Spot TPU VM                         [TPU_SPOT=1]
#   --repo=URL         git URL of ditjax, cloned on every worker    [DITJAX_REPO]
#   --branch=BRANCH    branch or tag to check out (main)       [DITJAX_BRANCH]
#   --python=VERSION   Python of the workers' virtualenv (3.12)     [DITJAX_PYTHON]
#   --config=PATH      training config, relative to the checkout (configs/xl2.py)  [CONFIG]
#   --workdir=URL      run directory, shared by all workers: gs://BUCKET/runs/NAME  [WORKDIR]
#   --src=URL --dst=PATH   sync: source (gs://...) and destination (relative to ~)
#   --worker=N         worker for logs and ssh (0)                  [TPU_WORKER]
#   --timeout=SECONDS  stop: how long to wait for the processes to exit (600)
#   --force            stop: SIGKILL instead of SIGTERM (no checkpoint)
#   --dry-run          print every command instead of running it   [DRY_RUN=1]
#   -h, --help         this text
#
# Arguments after `--`, and any --config.FIELD=VALUE, are passed on to ditjax.train.
#
# Example (a DiT-XL/2 run on a v5p-32, 4 hosts):
#   launch/tpu_vm.sh create --name=dit --zone=us-east5-a --type=v5p-32
#   launch/tpu_vm.sh setup  --name=dit --zone=us-east5-a --repo=https://github.com/ORG/ditjax.git
#   launch/tpu_vm.sh sync   --name=dit --zone=us-east5-a \
#       --src=gs://BUCKET/imagenet256_latents --dst=ditjax/data/imagenet256_latents
#   launch/tpu_vm.sh train  --name=dit --zone=us-east5-a --config=configs/xl2.py \
#       --workdir=gs://BUCKET/runs/dit-xl2
#   launch/tpu_vm.sh logs   --name=dit --zone=us-east5-a
set -euo pipefail

PROG=launch/tpu_vm.sh
COMMANDS="create setup sync train logs status stop ssh delete"

# Paths on the workers. Remote commands start in the home directory, so relative paths are
# relative to it; $HOME is expanded by the worker's shell, not here.
REMOTE_DIR=ditjax
# shellcheck disable=SC2016
REMOTE_LOG='$HOME/ditjax-train.log'
# shellcheck disable=SC2016
REMOTE_PID='$HOME/ditjax-train.pid'

usage() {
  sed -n '/^# Usage:/,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

usage_error() {
  echo "${PROG}: $*" >&2
  echo "Run '${PROG} --help' for the commands and options." >&2
  exit 2
}

NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
PROJECT="${TPU_PROJECT:-}"
TYPE="${TPU_TYPE:-}"
VERSION="${TPU_VERSION:-}"
SPOT="${TPU_SPOT:-0}"
REPO="${DITJAX_REPO:-}"
BRANCH="${DITJAX_BRANCH:-main}"
PYTHON_VERSION="${DITJAX_PYTHON:-3.12}"
CONFIG="${CONFIG:-configs/xl2.py}"
WORKDIR="${WORKDIR:-}"
SRC=""
DST=""
WORKER="${TPU_WORKER:-0}"
TIMEOUT=600
FORCE=0
DRY_RUN="${DRY_RUN:-0}"
COMMAND=""
EXTRA=()

set_option() {
  case "$1" in
    --name) NAME="$2" ;;
    --zone) ZONE="$2" ;;
    --project) PROJECT="$2" ;;
    --type) TYPE="$2" ;;
    --version) VERSION="$2" ;;
    --repo) REPO="$2" ;;
    --branch) BRANCH="$2" ;;
    --python) PYTHON_VERSION="$2" ;;
    --config) CONFIG="$2" ;;
    --workdir) WORKDIR="$2" ;;
    --src) SRC="$2" ;;
    --dst) DST="$2" ;;
    --worker) WORKER="$2" ;;
    --timeout) TIMEOUT="$2" ;;
  esac
}

VALUE_OPTIONS="--name --zone --project --type --version --repo --branch --python --config \
--workdir --src --dst --worker --timeout"

is_value_option() {
  local option
  for option in ${VALUE_OPTIONS}; do
    [[ "$1" == "${option}" ]] && return 0
  done
  return 1
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --dry-run) DRY_RUN=1 ;;
    --spot) SPOT=1 ;;
    --force) FORCE=1 ;;
    --)
      shift
      EXTRA+=("$@")
      break
      ;;
    --config.*) EXTRA+=("$1") ;;
    --*=*)
      is_value_option "${1%%=*}" || usage_error "unknown option: ${1%%=*}"
      set_option "${1%%=*}" "${1#*=}"
      ;;
    -*)
      is_value_option "$1" || usage_error "unknown option: $1"
      [[ $# -ge 2 && "$2" != -* ]] || usage_error "$1 needs a value"
      set_option "$1" "$2"
      shift
      ;;
    *)
      [[ -z "${COMMAND}" ]] || usage_error "unexpected argument: $1"
      COMMAND="$1"
      ;;
  esac
  shift
done

[[ -n "${COMMAND}" ]] || usage_error "missing COMMAND (one of: ${COMMANDS})"
[[ " ${COMMANDS} " == *" ${COMMAND} "* ]] ||
  usage_error "unknown command: ${COMMAND} (one of: ${COMMANDS})"
case "${DRY_RUN}" in
  1 | true | yes) DRY_RUN=1 ;;
  *) DRY_RUN=0 ;;
esac

# require OPTION VALUE [ENV_VAR]: exit 2 naming the option when VALUE is empty.
require() {
  if [[ -z "$2" ]]; then
    usage_error "${COMMAND}: missing $1${3:+ (or set $3)}"
  fi
}

# One argument in a form a shell reads back unchanged: bare when safe, else single-quoted
# (for --opt=VALUE only the value is quoted).
quote() {
  local arg="$1" head=""
  if [[ "${arg}" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "${arg}"
    return
  fi
  if [[ "${arg}" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    head="${BASH_REMATCH[1]}"
    arg="${BASH_REMATCH[2]}"
  fi
  printf "%s'%s'" "${head}" "${arg//\'/\'\\\'\'}"
}

# Runs a command, or prints it (`+ cmd args`) under --dry-run.
run() {
  if [[ "${DRY_RUN}" == 1 ]]; then
    local out="+" arg
    for arg in "$@"; do
      out+=" $(quote "${arg}")"
    done
    printf '%s\n' "${out}"
    return 0
  fi
  "$@"
}

# tpu SUBCOMMAND ARGS...: `gcloud compute tpus tpu-vm SUBCOMMAND ARGS... [--project=P]`.
tpu() {
  local args=(gcloud compute tpus tpu-vm "$@")
  if [[ -n "${PROJECT}" ]]; then
    args+=("--project=${PROJECT}")
  fi
  run "${args[@]}"
}

# The TPU software version for an accelerator type (cloud.google.com/tpu/docs/runtimes).
default_version() {
  case "$1" in
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) return 1 ;;
  esac
}

# on_workers WORKER REMOTE_COMMAND: run a shell command on one worker or on all of them.
on_workers() {
  tpu ssh "${NAME}" --zone="${ZONE}" --worker="$1" --command="$2"
}

check_worker() {
  if [[ ! "${WORKER}" =~ ^[0-9]+$ ]]; then
    usage_error "${COMMAND}: --worker must be a worker number, got '${WORKER}'"
  fi
}

# "if ditjax.train runs on this worker" as a remote shell condition (sets pid).
RUNNING="[ -f ${REMOTE_PID} ] && pid=\$(cat ${REMOTE_PID}) && kill -0 \"\$pid\" 2>/dev/null"
# shellcheck disable=SC2016
HOST='$(hostname)'

cmd_create() {
  require --type "${TYPE}" TPU_TYPE
  if [[ -z "${VERSION}" ]]; then
    VERSION="$(default_version "${TYPE}")" ||
      usage_error "create: no default software version for --type=${TYPE}; pass --version"
  fi
  local state
  if [[ "${DRY_RUN}" == 1 ]]; then
    tpu describe "${NAME}" --zone="${ZONE}" --format="value(state)"
  elif state="$(tpu describe "${NAME}" --zone="${ZONE}" --format="value(state)" 2>/dev/null)"; then
    case "${state}" in
      PREEMPTED | TERMINATED | STOPPED)
        echo "TPU VM ${NAME} exists in ${ZONE} but is ${state}; delete it first:" >&2
        echo "  ${PROG} delete --name=${NAME} --zone=${ZONE}" >&2
        exit 1
        ;;
      *)
        echo "TPU VM ${NAME} already exists in ${ZONE} (${state}); reusing it."
        return 0
        ;;
    esac
  fi
  local args=(create "${NAME}" --zone="${ZONE}" --accelerator-type="${TYPE}"
    --version="${VERSION}")
  if [[ "${SPOT}" == 1 ]]; then
    args+=(--spot)
  fi
  tpu "${args[@]}"
}

cmd_setup() {
  require --repo "${REPO}" DITJAX_REPO
  local dir repo branch python script
  dir="$(quote "${REMOTE_DIR}")"
  repo="$(quote "${REPO}")"
  branch="$(quote "${BRANCH}")"
  python="$(quote "${PYTHON_VERSION}")"
  # The TPU images ship Python 3.10 and ditjax needs 3.11 or newer: uv provides the
  # virtualenv's interpreter (and downloads it when the image lacks it).
  script="set -e; mkdir -p ${dir}; cd ${dir}; [ -d .git ] || git init --quiet; "
  script+="git remote remove origin 2>/dev/null || true; git remote add origin ${repo}; "
  script+="git fetch --quiet origin ${branch}; git checkout --quiet -B ${branch} FETCH_HEAD; "
  # shellcheck disable=SC2016
  script+='export PATH="$HOME/.local/bin:$PATH"; '
  script+="command -v uv >/dev/null || python3 -m pip install --quiet --user uv "
  script+="|| curl -LsSf https://astral.sh/uv/install.sh | sh; "
  script+="[ -x .venv/bin/python ] || uv venv --quiet --seed --python ${python} .venv; "
  script+="uv pip install --quiet --python .venv/bin/python -e . 'jax[tpu]'; "
  script+="echo \"${HOST}: ditjax \$(git rev-parse --short HEAD), jax "
  script+="\$(.venv/bin/python -c 'import jax; print(jax.__version__)')\""
  on_workers all "${script}"
}

cmd_sync() {
  require --src "${SRC}"
  require --dst "${DST}"
  local src dst
  src="$(quote "${SRC}")"
  dst="$(quote "${DST}")"
  on_workers all "set -e; mkdir -p ${dst}; gcloud storage rsync --recursive ${src} ${dst}; \
echo \"${HOST}: \$(du -sh ${dst} | cut -f1) in ${dst}\""
}

cmd_train() {
  require --workdir "${WORKDIR}" WORKDIR
  if [[ "${WORKDIR}" != gs://* ]]; then
    echo "${PROG}: warning: --workdir=${WORKDIR} is not a gs:// path; all workers must" \
      "write to the same directory for checkpoints to be restorable" >&2
  fi
  local args=(.venv/bin/python -m ditjax.train "--config=${CONFIG}" "--workdir=${WORKDIR}")
  if [[ ${#EXTRA[@]} -gt 0 ]]; then
    args+=("${EXTRA[@]}")
  fi
  local train="" arg script
  for arg in "${args[@]}"; do
    train+="${train:+ }$(quote "${arg}")"
  done
  script="cd ${REMOTE_DIR} || exit 1; "
  script+="if ${RUNNING}; then echo \"${HOST}: ditjax.train already runs (pid \$pid)\" >&2; "
  script+="exit 1; fi; "
  script+="echo \"=== \$(date -u +%FT%TZ) starting ditjax.train\" >> ${REMOTE_LOG}; "
  script+="nohup ${train} >> ${REMOTE_LOG} 2>&1 < /dev/null & echo \$! > ${REMOTE_PID}; "
  script+="echo \"${HOST}: started pid \$!, logging to ${REMOTE_LOG}\""
  on_workers all "${script}"
}

cmd_logs() {
  check_worker
  on_workers "${WORKER}" "tail -n 200 -F ${REMOTE_LOG}"
}

cmd_status() {
  tpu describe "${NAME}" --zone="${ZONE}" --format="value(state,acceleratorType)"
  local script
  script="if ${RUNNING}; then echo \"${HOST}: training (pid \$pid)\"; "
  script+="else echo \"${HOST}: not training\"; fi; "
  script+="tail -n 1 ${REMOTE_LOG} 2>/dev/null || true"
  on_workers all "${script}"
}

cmd_stop() {
  if [[ ! "${TIMEOUT}" =~ ^[0-9]+$ ]]; then
    usage_error "stop: --timeout must be a number of seconds, got '${TIMEOUT}'"
  fi
  local signal=TERM script
  if [[ "${FORCE}" == 1 ]]; then
    signal=KILL
  fi
  # SIGTERM: every worker's ditjax saves a checkpoint at the same next step and exits 0.
  script="if ${RUNNING}; then kill -${signal} \"\$pid\"; "
  script+="echo \"${HOST}: sent SIG${signal} to \$pid\"; "
  script+="for i in \$(seq ${TIMEOUT}); do kill -0 \"\$pid\" 2>/dev/null || break; sleep 1; done; "
  script+="if kill -0 \"\$pid\" 2>/dev/null; then "
  script+="echo \"${HOST}: pid \$pid still runs after ${TIMEOUT}s\" >&2; exit 1; fi; "
  script+="echo \"${HOST}: stopped\"; "
  script+="else echo \"${HOST}: no ditjax.train running\"; fi"
  on_workers all "${script}"
}

cmd_ssh() {
  check_worker
  tpu ssh "${NAME}" --zone="${ZONE}" --worker="${WORKER}"
}

cmd_delete() {
  tpu delete "${NAME}" --zone="${ZONE}" --quiet
}

require --name "${NAME}" TPU_NAME
require --zone "${ZONE}" TPU_ZONE
if [[ ${#EXTRA[@]} -gt 0 && "${COMMAND}" != train ]]; then
  usage_error "${COMMAND}: unexpected training flags: ${EXTRA[*]}"
fi
"cmd_${COMMAND}"
