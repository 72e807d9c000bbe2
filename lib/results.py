"""Results files: small JSON documents written by runs, each carrying its provenance.

Every number the book shows is read from one of these (``results/<profile>/<name>.json``), never typed.
A result records the scale it was produced at, the full stage parameters, the git commit, package
versions, hardware and wall time.
"""
import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from lib import REPO_ROOT

# what each profile's numbers may be called in the book
SCALE_LABELS = {
    "smoke": "smoke scale (synthetic data, tiny random models: checks the pipeline, not a finding)",
    "cpu": "CPU-scale reproduction (MiniLM-L6 teacher, 2 CPU cores, offline mirror data)",
    "t4": "Colab T4 scale (BERT-base teacher, WikiText-103, one 16 GB T4)",
    "paper": "paper scale (BERT-base teacher, Wikipedia-size corpus, multi-GPU)",
}
PACKAGES = ("torch", "transformers", "datasets", "accelerate", "numpy", "scikit-learn", "scipy", "plotly", "papermill")


def git_commit():
    """The checkout's commit, with '-dirty' when tracked code differs from it; 'unknown' outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        # outputs that runs rewrite do not make the code dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results",
                                ":!book/stages"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


_pinned_commit = None


def pin_commit():
    """Record the code's commit now, as a stage starts (lib.notebook_setup): its results, written minutes or
    hours later while the working tree may have moved on, then name the commit of the code that computed them."""
    global _pinned_commit
    _pinned_commit = git_commit()
    return _pinned_commit


def versions():
    from importlib.metadata import PackageNotFoundError, version
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def hardware():
    import torch
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_count=torch.cuda.device_count(),
                    compute_capability=f"{props.major}.{props.minor}", gpu_memory_gb=round(props.total_memory / 2**30, 1))
    return info


def provenance(params=None):
    from lib import config
    record = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "git_commit": _pinned_commit or git_commit(),
              "versions": versions(), "hardware": hardware()}
    if params is not None:
        record.update(profile=params.profile, scale=SCALE_LABELS.get(params.profile, params.profile),
                      params=config.as_dict(params))
    return record


def write_json(path, payload):
    """Write JSON atomically (temp file + rename), so an interrupted run never leaves half a result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=1, sort_keys=False, default=_jsonable)
        f.write("\n")
    os.replace(tmp, path)
    return path


def write_result(params, name, payload, wall_time_s):
    """``results_dir/<name>.json`` with the payload, the wall time and the provenance of ``params``."""
    record = {"name": name, "wall_time_s": round(wall_time_s, 3), **payload, "provenance": provenance(params)}
    return write_json(params.path("results_dir") / f"{name}.json", record)


def read_result(path):
    return json.loads(Path(path).read_text())


def read_results(results_dir, pattern="*.json"):
    """All results under ``results_dir`` matching ``pattern`` (recursively), sorted by path."""
    return [read_result(p) for p in sorted(Path(results_dir).rglob(pattern))]


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to a results file")
