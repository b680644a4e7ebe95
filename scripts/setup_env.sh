#!/usr/bin/env bash
# One idempotent setup of the whole Python stack into ./.venv (CPU machine; see README for GPU clusters).
#   torch/torchvision (local-disk pins) -> build tools -> mmcv 2.1.0 CPU-ops wheel (cached) -> project + extras
#   -> detectron2 (repackaged upstream, pure-Python part).
# A stamp (hash of the inputs) makes a second run with nothing to do take ~1 s.
# Env: VENV (default .venv), A2MIM_CACHE (default ~/.cache/a2mim-suite), PYTHON (default python3.11/python3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
CACHE=${A2MIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/a2mim-suite}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_PIN="torch==2.14.1 torchvision==0.29.1"
MMCV_VERSION=2.1.0
D2_PIN="sal-detectron2==0.7.2"
D2_DEPS="fvcore==0.1.5.post20221221 iopath==0.1.9 yacs termcolor tabulate cloudpickle hydra-core==1.3.2 black"
# data.backend=dali (optional): measured 11-15 s / 525 MB download here, so CI installs it and runs the DALI CPU-only
# pipeline tests; A2MIM_SKIP_DALI=1 skips it (those tests then skip, naming `pip install .[dali]`)
DALI_PIN="nvidia-dali-cuda120==2.4.0"

t0=$(date +%s)
log() { printf '[setup %4ds] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

stamp_inputs() { cat pyproject.toml scripts/setup_env.sh scripts/build_mmcv_cpu.sh; echo "$TORCH_PIN $MMCV_VERSION $D2_PIN $D2_DEPS $DALI_PIN ${A2MIM_SKIP_DALI:-0}"; }
STAMP=$(stamp_inputs | sha256sum | cut -c1-16)
if [[ -f "$VENV/.a2mim-setup-stamp" && "$(cat "$VENV/.a2mim-setup-stamp")" == "$STAMP" ]]; then
  log "environment up to date ($VENV)"; exit 0
fi

[[ -x "$VENV/bin/python" ]] || { log "creating $VENV with $PYTHON"; "$PYTHON" -m venv "$VENV"; }
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check -q"
$PIP install --upgrade "pip>=24"
log "torch: $TORCH_PIN"
$PIP install $TORCH_PIN
$PIP install "setuptools<81" wheel ninja mmengine==0.10.7

# ---- mmcv with compiled CPU ops: cached wheel keyed on mmcv + torch + python tag + arch
KEY=$($PY - <<PYEOF
import platform, sys, torch
print(f"mmcv-$MMCV_VERSION-torch{torch.__version__.replace('+','_')}-cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}")
PYEOF
)
WHEEL_DIR="$CACHE/wheels/$KEY"
if ! ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl >/dev/null 2>&1; then
  log "building mmcv $MMCV_VERSION CPU ops wheel ($KEY) — ~6 min on 2 cores, cached afterwards"
  tmp="$WHEEL_DIR.partial.$$"; rm -rf "$tmp"; mkdir -p "$tmp"
  PY="$PY" bash scripts/build_mmcv_cpu.sh "$tmp" > "$tmp.log" 2>&1 || { tail -30 "$tmp.log"; echo "mmcv build failed (log: $tmp.log)" >&2; exit 1; }
  rm -rf "$WHEEL_DIR"; mv "$tmp" "$WHEEL_DIR"   # publish atomically: a killed build leaves no half cache
  rm -f "$tmp.log"
fi
log "installing cached $(basename "$WHEEL_DIR"/mmcv-*.whl)"
$PIP install --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl
$PIP install addict packaging opencv-python-headless pyyaml yapf

log "project + framework stack (pyproject.toml [all])"
$PIP install --no-build-isolation -e ".[all]"

# ---- detectron2: repackaged upstream (commit a59f056), pure-Python part only (its _C is CUDA-only)
SITE=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if ! $PY -c "import detectron2" 2>/dev/null; then
  log "detectron2 ($D2_PIN, pure-Python part)"
  $PIP install $D2_DEPS
  $PIP install --no-deps --upgrade --target "$SITE" --python-version 310 --only-binary=:all: $D2_PIN
  rm -f "$SITE"/detectron2/_C*.so
fi
if [[ "${A2MIM_SKIP_DALI:-0}" != 1 ]]; then
  log "DALI ($DALI_PIN, optional)"
  $PIP install "$DALI_PIN" || log "DALI install failed: its tests will skip (pip install .[dali])"
fi
$PY -c "from mmcv.ops import RoIAlign, nms; import mmdet, mmseg, detectron2, timm, submitit, torchcodec.decoders, webdataset" \
  || { echo "stack check failed" >&2; exit 1; }
echo "$STAMP" > "$VENV/.a2mim-setup-stamp"
log "done"
