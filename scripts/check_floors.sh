#!/usr/bin/env bash
# Are the lower bounds in requirements*.txt true? Installs exactly the floor of every `package>=floor` line
# (package==floor) into a fresh virtual environment on the oldest supported Python, then runs the fast tests.
#
#   scripts/check_floors.sh                 # venv in build/floors-venv, log in build/floors.log
#   PYTHON=python3.11 VENV=/tmp/v scripts/check_floors.sh
#
# torch comes from PyTorch's CPU index (the PyPI wheel drags in gigabytes of CUDA libraries), falling back to
# PyPI. Packages without a floor (and dependencies of dependencies) resolve to whatever pip picks. When it
# passes, update the "Dependency floors" line of the README with the date and `build/floors-venv/freeze.txt`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-build/floors-venv}
pins=$(sed -n 's/^\([A-Za-z0-9_.-]*\)>=\([0-9][0-9.]*\).*/\1==\2/p' requirements.txt requirements-book.txt requirements-dev.txt)
echo "floors: $(echo $pins)"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"the Python floor is 3.11, this is {sys.version}"'
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
torch_pin=$(echo "$pins" | grep '^torch==')
"$VENV/bin/pip" install -q --retries 0 --timeout 15 "$torch_pin" --index-url https://download.pytorch.org/whl/cpu \
  || "$VENV/bin/pip" install -q "$torch_pin"
# shellcheck disable=SC2086
"$VENV/bin/pip" install -q $pins
"$VENV/bin/pip" freeze > "$VENV/freeze.txt"
# shellcheck disable=SC2086
"$VENV/bin/python" - $pins <<'PY'  # say so if pip installed anything but the floor
import sys
from importlib.metadata import version
from packaging.version import Version
for pin in sys.argv[1:]:
    name, floor = pin.split("==")
    got = version(name)
    if Version(Version(got).base_version) != Version(floor):
        print(f"note: {name} {got} installed, not the floor {floor}")
PY
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  "$VENV/bin/python" -m pytest -q -m "not slow" -p no:cacheprovider "$@"
echo "floors passed on $(date -u +%F) with Python $("$VENV/bin/python" -V)"
