#!/usr/bin/env bash
# The GPU path checked on one GPU in under 8 minutes: versions, the sketch kernels' correctness and
# speed, the host's batch building, and static / acodm / proxy training of a 160M and a 1B model.
# Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md (bench/gpu_check.py says what is in them).
#
#   bench/gpu_check.sh OUT_DIR [WHEEL_DIR] [--cpu]
#
# On a bare PyTorch image (no megatron-core, no network) the wheels that the check needs and the
# image lacks are installed into /tmp/site from WHEEL_DIR (default: the GPU_CHECK_WHEELS variable,
# else .whl at the repository root); pip picks the file for this Python among those carried. A wheel
# still missing then is named in one `error:` line with the `pip download` command that fetches it.
# megatron-core is the current release, 0.19.2 (Python 3.12, as on the GPU machines), unless
# GPU_CHECK_MEGATRON_CORE names another (0.16.1, the last release for older Pythons); where it is
# set, an installed megatron-core of another version is replaced in /tmp/site as well.
# --cpu: the same check on tiny shapes with Triton interpreted, for machines without a GPU (the
# tests run it); without --cpu a machine without CUDA is refused.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The project's package from this checkout, without installing it (the device image has no network).
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
USAGE="usage: bench/gpu_check.sh OUT_DIR [WHEEL_DIR] [--cpu]"

positional=()
cpu=()
for argument in "$@"; do
    case $argument in
        --cpu) cpu=(--cpu) ;;
        -h | --help) echo "$USAGE"; exit 0 ;;
        -*) echo "error: unknown option $argument; $USAGE" >&2; exit 2 ;;
        *) positional+=("$argument") ;;
    esac
done
if (( ${#positional[@]} < 1 || ${#positional[@]} > 2 )); then
    echo "error: give OUT_DIR and at most one WHEEL_DIR; $USAGE" >&2
    exit 2
fi
out_dir=${positional[0]}
wheel_dir=${positional[1]:-${GPU_CHECK_WHEELS:-$REPO/.whl}}

# Install only what the image lacks (NAME==VERSION, one a line), and only what WHEEL_DIR holds: the
# image has no network to resolve dependencies from, and the check names what is still missing.
missing=$(python3 "$REPO/bench/gpu_check.py" --list-missing)
carried=()
for requirement in $missing; do
    name=${requirement%%==*}
    if compgen -G "$wheel_dir/${name//-/_}-${requirement#*==}-*.whl" > /dev/null; then
        carried+=("$requirement")
    fi
done
if (( ${#carried[@]} > 0 )); then
    echo "gpu_check: installing ${carried[*]} from $wheel_dir into /tmp/site" >&2
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        --find-links "$wheel_dir" "${carried[@]}" \
        || { echo "error: pip could not install ${carried[*]} from $wheel_dir (its messages are above); replace the wheel it names" >&2; exit 2; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
exec python3 "$REPO/bench/gpu_check.py" "$out_dir" --wheel-dir "$wheel_dir" "${cpu[@]}"
