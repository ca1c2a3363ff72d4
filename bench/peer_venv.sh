#!/usr/bin/env bash
# The venv bench/peer.py runs both tools in (issue #21): the project's venv plus what diffusers' DreamBooth-LoRA
# example needs (torchvision, ftfy, tensorboard: its default --report_to). Both tools then import the same torch.
#
#   bash bench/peer_venv.sh [PROJECT_VENV] [PEER_VENV]      (defaults: .venv, /work/peer-venv)
#
# torchvision comes from PyPI with --no-deps: its PyPI wheel pins the CUDA torch, which must not replace the CPU one.
# Its compiled ops do not load beside the CPU torch; the peer uses only its transforms, and bench/peer.py defines the
# two op schemas torchvision's import needs. The project's packages are reached through a .pth file, not copied.
set -euo pipefail
project=$(cd "${1:-.venv}" && pwd)
peer=${2:-/work/peer-venv}
python=$(readlink -f "$project/bin/python")
site=$("$project/bin/python" -c "import site; print(site.getsitepackages()[0])")
"$python" -m venv "$peer"
peer_site=$("$peer/bin/python" -c "import site; print(site.getsitepackages()[0])")
echo "$site" > "$peer_site/zz_project_venv.pth"
"$peer/bin/pip" install --no-deps "torchvision==0.28.0" ftfy wcwidth
"$peer/bin/pip" install tensorboard
"$peer/bin/python" -c "import torch; print('peer venv torch', torch.__version__, torch.__file__)"
