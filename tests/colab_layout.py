"""Colab's real layout, in a temporary folder, for tests that run a generated Colab copy the way Colab does.

On Colab the kernel starts in /content, whose parent / holds the system's /lib; the project is cloned to
/content/distilbert-reproduced; the kernel imports google.colab at start-up; Drive mounts at /content/drive. Here:

- ``<tmp>/lib`` is an unrelated folder (``libc.so.6``, ``python3/``) beside ``<tmp>/content``, the kernel's cwd;
- ``<tmp>/content/distilbert-reproduced`` is a copy of this working tree (uncommitted changes included), so the
  Colab copy's clone step finds it and neither clones nor installs;
- ``DISTILBERT_COLAB_CONTENT=<tmp>/content`` moves lib.colab's /content (the clone and Drive) there;
- a stand-in ``google.colab`` is the kernel's only PYTHONPATH entry (the project is neither on it nor installed):
  its ``sitecustomize.py`` imports it at start-up, and its ``drive.mount(path)`` makes ``<path>/MyDrive``;
  with ``FAKE_HOSTNAME`` set, ``socket.gethostname()`` returns it (a run resumed on another Colab VM).

    layout = colab_layout(tmp_path)
    executed = layout.run(layout.notebook("01_teacher", adapt_steps=3), hostname="vm-2")
"""
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from lib import REPO_ROOT, colab

# what a stage needs from the working tree; results/ and book/ are outputs of other runs
SKIPPED = ("results/", "book/", "tests/", "benchmarks/", ".github/", ".ci/")

STANDIN = {
    "google/colab/__init__.py": '"""Stand-in for Colab\'s google.colab (tests/colab_layout.py)."""\n'
                                "from . import drive  # noqa: F401\n",
    "google/colab/drive.py": "import os\n\n\n"
                             "def mount(mountpoint, force_remount=False, **kwargs):\n"
                             "    os.makedirs(os.path.join(mountpoint, 'MyDrive'), exist_ok=True)\n"
                             "    print(f'Mounted at {mountpoint}')\n",
    # Python imports sitecustomize at start-up: the kernel has google.colab before any cell, as on Colab
    "sitecustomize.py": "import os\nimport socket\n\nimport google.colab  # noqa: F401\n\n"
                        "if os.environ.get('FAKE_HOSTNAME'):\n"
                        "    socket.gethostname = lambda: os.environ['FAKE_HOSTNAME']\n",
}


@dataclass
class ColabLayout:
    root: Path     # Colab's /, with an unrelated lib/
    content: Path  # /content: the kernel's working directory
    home: Path     # /content/distilbert-reproduced: the clone
    drive: Path    # /content/drive (MyDrive appears when the notebook mounts it)
    standin: Path  # the google.colab stand-in: the kernel's only PYTHONPATH entry

    def drive_dir(self, kind, profile="smoke"):
        """Where a Colab run's ``kind`` ("runs" or "results") of ``profile`` go by default."""
        return self.drive / "MyDrive" / colab.PROJECT / kind / profile

    def env(self, extra=None, hostname=None):
        """The kernel's environment: this one, but PYTHONPATH only the stand-in, Colab's folder moved here."""
        env = {**os.environ, "PYTHONPATH": str(self.standin), colab.CONTENT_VARIABLE: str(self.content),
               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        env.pop("FAKE_HOSTNAME", None)
        if hostname:
            env["FAKE_HOSTNAME"] = hostname
        return {**env, **(extra or {})}

    def notebook(self, stem, **parameters):
        """Stage ``stem``'s Colab copy (lib.colab.clean_notebook), its parameters cell edited as a user does."""
        notebook = colab.clean_notebook(stem)
        edit_parameters(notebook, **parameters)
        return notebook

    def client(self, notebook, timeout=600):
        """An nbclient client that runs ``notebook`` with the kernel in /content (``client.execute(env=...)``)."""
        return NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                              resources={"metadata": {"path": str(self.content)}})

    def run(self, notebook, env=None, hostname=None, timeout=600):
        """Run all of ``notebook`` in a fresh kernel laid out as on Colab; returns it executed."""
        self.client(notebook, timeout).execute(env=self.env(env, hostname))
        return notebook


def colab_layout(tmp_path):
    """Lay Colab out under ``tmp_path`` (see the module doc); returns the ColabLayout."""
    root = Path(tmp_path)
    (root / "lib" / "python3").mkdir(parents=True)  # what / holds on Colab: not this project's lib
    (root / "lib" / "libc.so.6").write_bytes(b"\x7fELF")
    content = root / "content"
    home = content / colab.PROJECT
    copy_working_tree(home)
    standin = root / "colab-standin"
    for name, text in STANDIN.items():
        (standin / name).parent.mkdir(parents=True, exist_ok=True)
        (standin / name).write_text(text)
    return ColabLayout(root=root, content=content, home=home, drive=content / "drive", standin=standin)


def copy_working_tree(target):
    """Copy the files git tracks or would track, as they are now, into ``target`` (no .git: the clone of a commit
    holding this working tree); the generated smoke hub comes along, as Colab would build the same."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if name.startswith(SKIPPED) or not source.is_file():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)
    hub = REPO_ROOT / "build" / "smoke-hub"
    if hub.is_dir():
        shutil.copytree(hub, target / "build" / "smoke-hub", ignore=shutil.ignore_patterns(".cache", "*.lock"))


def edit_parameters(notebook, **values):
    """Edit the parameters cell's text as a user does in Colab: replace each ``name = ...`` line."""
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    for name, value in values.items():
        cell.source, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", cell.source, flags=re.M)
        assert n == 1, f"the parameters cell has no line {name} = ..."


def printed(notebook, cell=-1):
    """The text a cell of an executed notebook printed."""
    return "".join(output.get("text", "") for output in notebook.cells[cell].outputs)


def code_cell(source):
    return nbformat.v4.new_code_cell(source)
