"""Colab: the clean notebooks the "Open in Colab" links open (in sync with notebooks/*.py, obeying an edited
parameters cell), the repository address written in one place, and the Drive defaults (Colab faked on CPU)."""
import json
import re
import subprocess
import sys
import types

import jupytext
import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from colab_layout import edit_parameters
from lib import REPO_ROOT, colab, config, pipeline

STEMS = [spec.notebook for spec in config.STAGES.values()]
FORK = "https://github.com/alice/distil-fork"


# ------------------------------------------------------------------------------------------- one address

def test_the_repository_address_is_written_in_one_tracked_file_besides_the_readme():
    url = colab.repository_url()
    assert url.startswith("https://github.com/") and url.count("/") == 4
    owner, name = url.removeprefix("https://github.com/").split("/")
    needles = [f"{owner}/{name}", f"{owner}.github.io"]
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    holders = []
    for path in filter(None, files):
        try:
            text = (REPO_ROOT / path).read_text()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        if any(needle.lower() in text.lower() for needle in needles):
            holders.append(path)
    assert sorted(holders) == ["README.md", "_config.yml"], holders
    assert (REPO_ROOT / "_config.yml").read_text().count(f"{owner}/{name}") == 1


def test_repository_url_reads_config_and_colab_links_derive_from_it(tmp_path):
    config_file = tmp_path / "_config.yml"
    config_file.write_text(yaml.safe_dump({"repository": {"url": FORK + "/", "branch": "main"}}))
    assert colab.repository_url(config_file) == FORK
    assert colab.colab_url("03_glue", FORK) == \
        "https://colab.research.google.com/github/alice/distil-fork/blob/colab/03_glue.ipynb"
    config_file.write_text("title: x\n")
    with pytest.raises(ValueError, match="repository: url"):
        colab.repository_url(config_file)


def test_readme_colab_links_open_the_clean_notebooks():
    readme = (REPO_ROOT / "README.md").read_text()
    links = re.findall(r"\[Open in Colab\]\(([^)]+)\)", readme)
    assert links == [colab.colab_url(stem) for stem in STEMS]


def test_book_colab_links_open_the_clean_notebook_not_the_executed_one():
    import importlib.util
    spec = importlib.util.spec_from_file_location("stage_pages", REPO_ROOT / "book" / "_ext" / "stage_pages.py")
    pages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pages)
    theme = {"repository_url": FORK, "launch_buttons": {"colab_url": "https://colab.research.google.com"}}
    assert pages.colab_url(theme, "stages/cpu/02_distill") == colab.colab_url("02_distill", FORK)
    theme_button = {"type": "link", "text": "Colab", "url": "https://colab.research.google.com/github/alice/"
                    "distil-fork/blob/main/book/stages/cpu/02_distill.ipynb"}
    context = {"header_buttons": [{"label": "launch-buttons", "buttons": [dict(theme_button)]}]}
    app = types.SimpleNamespace(config=types.SimpleNamespace(html_theme_options=theme))
    pages.fix_colab_buttons(app, "stages/cpu/02_distill", None, context, None)
    assert context["header_buttons"][0]["buttons"][0]["url"] == colab.colab_url("02_distill", FORK)
    context = {"header_buttons": [{"label": "launch-buttons", "buttons": [dict(theme_button)]}]}
    pages.fix_colab_buttons(app, "reproduce", None, context, None)  # Colab cannot open a MyST page
    assert context["header_buttons"] == []


def test_strip_script_removes_the_address_from_an_executed_notebook_and_nothing_else(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import strip_repository_address as strip
    setup = f'subprocess.run(["git", "clone", "-q", "{FORK}", _HOME], check=True)\n'
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(setup),
                                               nbformat.v4.new_code_cell("print(1)", outputs=[
                                                   nbformat.v4.new_output("stream", text=f"{FORK}\n")])])
    path = tmp_path / "01_teacher.ipynb"
    nbformat.write(notebook, path)
    assert strip.strip(path, FORK) == 1
    after = nbformat.read(path, as_version=4)
    assert FORK not in after.cells[0].source and strip.POINTER in after.cells[0].source
    assert after.cells[1] == notebook.cells[1]  # outputs are the record: untouched
    assert strip.strip(path, FORK) == 0


# ------------------------------------------------------------------------------------------- clean notebooks

@pytest.mark.parametrize("stem", STEMS)
def test_clean_notebook_is_the_source_with_the_address_filled_in(stem):
    source = pipeline.read_notebook(config.stage_by_notebook(stem))  # its parameters cell lists every parameter
    clean = colab.clean_notebook(stem, FORK, commit="abc123")
    nbformat.validate(clean)
    assert clean.cells[0].cell_type == "markdown" and clean.cells[0].source.startswith("# Stage")
    assert "parameters" in clean.cells[1].metadata.get("tags", [])  # right after the title
    assert "profile = " in clean.cells[1].source
    assert len(clean.cells) == len(source.cells)
    changed = []
    for ours, theirs in zip(clean.cells, source.cells):
        assert ours.cell_type == theirs.cell_type
        assert "injected-parameters" not in ours.metadata.get("tags", [])
        if ours.cell_type == "code":
            assert ours.outputs == [] and ours.execution_count is None
        if ours.source != theirs.source:
            changed.append((theirs.source.splitlines(), ours.source.splitlines()))
    (params, params_clean), (setup, setup_clean) = changed  # the parameters cell, the setup cell
    assert [line for line in params_clean if line not in params] == ["_project_commit = 'abc123'"]
    at = next(i for i, line in enumerate(setup) if line.startswith(colab.SETUP_LINE))
    assert setup_clean == setup[:at] + colab.colab_setup(FORK) + setup[at:]  # the clone code goes in first
    assert f"    os.chdir(clone_project({FORK!r}, _project_commit, _home))" in setup_clean
    # the tracked source itself names no repository and clones nothing: the clean copy is where that is filled in
    tracked = (REPO_ROOT / "notebooks" / f"{stem}.py").read_text()
    assert "clone_project" not in tracked and "git clone" not in tracked and "pip install" not in tracked
    assert tracked.count(colab.SETUP_LINE) == 1 and "lib/colab.py" in tracked


def test_the_colab_setup_clones_and_installs_once(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: ran.append(command))
    home = str(tmp_path / "distilbert-reproduced")
    assert colab.clone_project(FORK, "abc123", home) == home
    assert ran == [["git", "clone", "-q", FORK, home], ["git", "-C", home, "checkout", "-q", "abc123"],
                   [sys.executable, "-m", "pip", "install", "-q", "-r", f"{home}/requirements.txt"]]
    ran.clear()
    (tmp_path / "distilbert-reproduced").mkdir()  # Run all again, or the next stage: nothing to do
    assert colab.clone_project(FORK, "abc123", home) == home and ran == []


def test_write_clean_notebooks_writes_every_stage(tmp_path):
    paths = colab.write_clean_notebooks(tmp_path, FORK)
    assert [p.name for p in paths] == [f"{stem}.ipynb" for stem in STEMS]
    assert nbformat.read(paths[1], as_version=4) == colab.clean_notebook("02_distill", FORK)


def test_pages_workflow_publishes_the_clean_notebooks_on_the_colab_branch():
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "pages.yml").read_text())
    runs = " ".join(s.get("run", "") for s in workflow["jobs"]["colab"]["steps"])
    assert "python -m lib.colab" in runs and f"push -q -f origin {colab.COLAB_BRANCH}" in runs
    assert workflow["jobs"]["colab"]["permissions"]["contents"] == "write"


def _execute(notebook, tmp_path):
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return notebook


@pytest.mark.slow
def test_an_edited_parameters_cell_is_what_each_stage_loads(tmp_path):
    # profile = "t4" in every stage's clean notebook, run from the top up to the cell that loads the parameters
    for stage, spec in config.STAGES.items():
        notebook = colab.clean_notebook(spec.notebook, FORK)
        edit_parameters(notebook, profile="t4", seed=7, run_dir=str(tmp_path / "runs"))
        if stage == "glue":
            edit_parameters(notebook, tasks=["rte"])  # a parameter named like a module the notebook imports
        last = next(i for i, c in enumerate(notebook.cells) if "lib.notebook_setup(" in c.source)
        # the parameters only: notebook_setup's preflight would look for the t4 models, absent offline
        notebook.cells[last].source = "import lib.colab\n" + notebook.cells[last].source.replace(
            "lib.notebook_setup(", "lib.colab.load_notebook_params(")
        notebook.cells = notebook.cells[:last + 1] + [nbformat.v4.new_code_cell(
            "import json\nimport lib.config\nprint('PARAMS ' + json.dumps(lib.config.as_dict(params)))")]
        _execute(notebook, REPO_ROOT)
        printed = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
        loaded = json.loads(printed.split("PARAMS ", 1)[1])
        assert loaded["profile"] == "t4" and loaded["seed"] == 7 and loaded["run_dir"] == str(tmp_path / "runs")
        for name, value in config.profile_values("t4", stage).items():
            if name not in ("seed", "run_dir", "tasks") and not isinstance(value, (dict, str)):
                assert loaded[name] == value, (stage, name)
        if stage == "glue":
            assert loaded["tasks"] == ["rte"]


@pytest.mark.slow
def test_an_edited_parameters_cell_runs_exactly_that(tmp_path):
    notebook = colab.clean_notebook("01_teacher", FORK)
    edit_parameters(notebook, profile="smoke", adapt_steps=3, eval_sequences=8,
                     run_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    _execute(notebook, REPO_ROOT)
    record = json.loads((tmp_path / "results" / "teacher.json").read_text())
    params = record["provenance"]["params"]
    assert (params["profile"], params["adapt_steps"], params["eval_sequences"]) == ("smoke", 3, 8)
    assert params["run_dir"] == str(tmp_path / "runs") and (tmp_path / "runs" / "teacher").is_dir()


# ------------------------------------------------------------------------------------------- what the cell set

PARAMETERS_CELL = "profile = 'smoke'\n{line}\n_project_commit = None  # lib.pipeline: this run's commit\n"
SETUP_CELLS = ["import os, sys\nsys.path[:0] = []", "import lib\nparams = lib.notebook_setup('distill', globals())"]


def _kernel(*cells, **values):
    """A kernel's globals after ``cells`` ran in order (``values`` what they left), ``In`` its input history."""
    return {"In": ["", *cells], "profile": "smoke", "_project_commit": None, **values}


def test_the_tracked_notebooks_short_parameters_cell_is_found_by_its_marker():
    # notebooks/02_distill.py opened in Jupyter as it is: its cell assigns profile, and what the user adds
    tracked = next(c.source for c in jupytext.read(REPO_ROOT / "notebooks" / "02_distill.py").cells
                   if "parameters" in c.metadata.get("tags", []))
    assert "_project_commit" not in tracked and tracked.startswith(colab.PARAMETERS_MARKER)
    edited = tracked + "\nmax_steps = 3\n"
    namespace = {"In": ["", tracked, *SETUP_CELLS, edited, *SETUP_CELLS], "profile": "smoke", "max_stps": 3,
                 "max_steps": 3}  # max_stps: a global that no run of the cell assigned (a user's other cell)
    assert colab._parameters_cell_names(namespace["In"]) == {"profile", "max_steps"}
    assert colab.load_notebook_params("distill", namespace).max_steps == 3


def test_a_name_the_parameters_cell_no_longer_assigns_is_not_taken():
    # Run all with a typo, then the typo corrected and Run all again in the same kernel: the typo stays a global
    typo = PARAMETERS_CELL.format(line="learning_rat = 1e-4")
    fixed = PARAMETERS_CELL.format(line="learning_rate = 1e-4")
    namespace = _kernel(typo, *SETUP_CELLS, fixed, *SETUP_CELLS, learning_rat=1e-4, learning_rate=1e-4)
    assert "learning_rat" not in colab.notebook_parameters("distill", namespace)
    assert colab.load_notebook_params("distill", namespace).learning_rate == 1e-4
    with pytest.raises(config.ParameterError, match="'learning_rat'"):  # while the cell has it, it is an error
        colab.load_notebook_params("distill", _kernel(typo, *SETUP_CELLS, learning_rat=1e-4))


def test_papermills_injected_parameters_count_and_a_typo_there_is_refused():
    injected = "# Parameters\nprofile = 'smoke'\nmax_steps = 3\n_project_commit = 'abc'\n"
    cell = PARAMETERS_CELL.format(line="max_steps = None")
    assert colab.load_notebook_params("distill", _kernel(cell, injected, *SETUP_CELLS, max_steps=3)).max_steps == 3
    with pytest.raises(config.ParameterError, match="'max_step'.*papermill -p"):
        colab.load_notebook_params("distill", _kernel(cell, injected + "max_step = 3\n", max_step=3))


def test_without_the_parameters_cell_in_the_history_a_leftover_name_says_to_restart():
    globals_ = {"profile": "t4", "tasks": ["rte"], "seed": 3, "record": 12.5, "plots": types.ModuleType("plots"),
                "summary": [1, 2], "warmups": 3, "In": []}
    given = colab.notebook_parameters("glue", globals_)
    # every global but the notebook's own names (`record`, `summary`, `plots`, left by an earlier run); `tasks`
    # is a parameter, and `warmups` a typo or a leftover: which one, the history cannot tell
    assert given == {"profile": "t4", "tasks": ["rte"], "seed": 3, "warmups": 3, "In": []}
    with pytest.raises(config.ParameterError, match="'warmups'.*Runtime > Restart session"):
        colab.load_notebook_params("glue", globals_)


def test_a_corrected_typo_runs_in_the_same_kernel():
    # Colab's sequence in one kernel: Run all with the typo (refused), the cell corrected, Run all again
    notebook = colab.clean_notebook("02_distill", FORK)
    cells = notebook.cells[:3]
    load = nbformat.v4.new_code_cell("import lib.colab\nprint(lib.colab.load_notebook_params('distill', "
                                     "globals()).learning_rate)")
    typo, fixed = nbformat.from_dict(cells[1]), nbformat.from_dict(cells[1])
    typo.source = typo.source.replace("learning_rate = None", "learning_rat = 1e-4")
    fixed.source = fixed.source.replace("learning_rate = None", "learning_rate = 1e-4")
    refused = nbformat.from_dict(load)
    refused.metadata["tags"] = ["raises-exception"]
    notebook.cells = [cells[0], typo, cells[2], refused, fixed, cells[2], load]
    _execute(notebook, REPO_ROOT)
    assert "learning_rat" in notebook.cells[3].outputs[-1]["evalue"]
    assert notebook.cells[-1].outputs[0]["text"].strip() == "0.0001"


# ------------------------------------------------------------------------------------------- resume by default

def test_on_colab_stage_2_resumes_unless_the_cell_says_not_to(fake_colab):
    cell = PARAMETERS_CELL.format(line="resume = None")
    assert colab.load_notebook_params("distill", _kernel(cell, resume=None)).resume is True
    cell = PARAMETERS_CELL.format(line="resume = False")
    assert colab.load_notebook_params("distill", _kernel(cell, resume=False)).resume is False
    assert "resume" not in colab.notebook_parameters("teacher", _kernel(PARAMETERS_CELL.format(line="")))  # none


def test_off_colab_resume_is_the_profiles_and_the_long_profiles_resume(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    cell = PARAMETERS_CELL.format(line="resume = None")
    assert colab.load_notebook_params("distill", _kernel(cell, resume=None)).resume is False  # smoke: start over
    for profile in ("t4", "paper"):  # runs long enough to be cut off by a disconnect or preemption
        assert config.profile_values(profile, config.DISTILL)["resume"] is True


# ------------------------------------------------------------------------------------------- Colab, faked

@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    mounts = []
    drive = types.SimpleNamespace(mount=lambda where: mounts.append(where))
    google = types.ModuleType("google.colab")
    google.drive = drive
    monkeypatch.setitem(sys.modules, "google.colab", google)
    monkeypatch.setattr(colab, "DRIVE", str(tmp_path / "drive"))  # not mounted: MyDrive is missing there
    return mounts


def test_off_colab_run_and_results_dirs_default_to_the_repository(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    params = config.load_params("distill", profile="smoke")
    assert (params.run_dir, params.results_dir) == ("runs/smoke", "results/smoke")


def test_on_colab_run_and_results_dirs_default_to_drive_which_is_mounted(fake_colab, capsys):
    params = config.load_params("distill", profile="smoke")
    assert params.run_dir == "/content/drive/MyDrive/distilbert-reproduced/runs/smoke"
    assert params.results_dir == "/content/drive/MyDrive/distilbert-reproduced/results/smoke"
    assert params.path("run_dir").as_posix() == params.run_dir
    assert fake_colab and fake_colab[0] == colab.DRIVE
    assert "Mounting Google Drive" in capsys.readouterr().out
    explicit = config.load_params("distill", profile="smoke", run_dir="/tmp/r", results_dir="/tmp/s")
    assert (explicit.run_dir, explicit.results_dir) == ("/tmp/r", "/tmp/s")


def test_on_colab_a_drive_path_in_the_parameters_mounts_drive(fake_colab):
    colab.notebook_parameters("teacher", {"profile": "smoke", "run_dir": "/tmp/x"})
    assert fake_colab == []
    colab.notebook_parameters("teacher", {"profile": "smoke", "corpus": [{"path": f"{colab.DRIVE}/c.txt"}]})
    assert fake_colab == [colab.DRIVE]


def test_on_colab_a_gpu_profile_on_a_cpu_runtime_stops(fake_colab, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    params = types.SimpleNamespace(profile="t4", run_dir="/tmp/r", results_dir="/tmp/s")
    with pytest.raises(RuntimeError, match="profile 't4' needs a GPU"):
        colab.check_runtime(params)
    colab.check_runtime(types.SimpleNamespace(profile="smoke", run_dir="/tmp/r", results_dir="/tmp/s"))
