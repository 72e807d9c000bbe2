import dataclasses
import re

import pytest
import yaml

from lib import REPO_ROOT, config

SMOKE_CORPUS = [{"id": "smoke/corpus", "split": "train", "column": "text"}]


def test_profile_fills_fields_and_namespace_overrides():
    namespace = {"profile": "smoke", "max_steps": 3, "alpha_cos": None, "In": [], "_": None, "config": config}
    params = config.load_params("distill", namespace)
    assert params.max_steps == 3                       # from the namespace (papermill's injected cell)
    assert params.batch_size == 8                      # from params/smoke/02_distill.yaml
    assert params.alpha_cos == 1.0                     # None means "the profile's value", here the default
    assert params.teacher == "runs/smoke/teacher"      # "{run_dir}" expanded
    assert params.results_dir == "results/smoke"


def test_unknown_parameter_is_named():
    with pytest.raises(config.ParameterError, match="'alpha_kl'"):
        config.load_params("distill", {"profile": "smoke", "alpha_kl": 1.0})


@pytest.mark.parametrize("name, value, message", [
    ("temperature", "hot", "expected float"),
    ("batch_size", 2.5, "expected int"),
    ("random_init", "yes", "expected bool"),
    ("temperature", 0, "must be > 0"),
    ("word_mask", 0.5, "sum to 1"),
    ("student_layers", [4, 2], "increasing distinct"),
    ("precision", "fp8", "not one of"),
    ("alpha_ce", -1.0, "must be >= 0"),
    ("corpus", [{"path": "no/such/file.txt"}], "text file not found"),
    ("mirror", "/no/such/mirror", "no such directory"),
    ("profile", "huge", "no parameter file"),
])
def test_invalid_values_fail_naming_the_parameter(name, value, message):
    with pytest.raises(config.ParameterError) as err:
        config.load_params("distill", {"profile": "smoke", name: value})
    assert err.value.name == name
    assert message in str(err.value)


def test_all_loss_weights_zero_is_rejected():
    with pytest.raises(config.ParameterError, match="nothing to train"):
        config.load_params("distill", profile="smoke", alpha_ce=0, alpha_mlm=0, alpha_cos=0)


def test_student_deeper_than_teacher_is_rejected():
    params = config.load_params("distill", profile="smoke", n_student_layers=6)
    with pytest.raises(config.ParameterError, match="1..4 layers"):
        params.check_teacher_depth(4)
    params = config.load_params("distill", profile="smoke", student_layers=[0, 2, 4])
    with pytest.raises(config.ParameterError) as err:
        params.check_teacher_depth(4)
    assert err.value.name == "student_layers"
    params.check_teacher_depth(6)  # fits


def test_ablation_variants_change_one_thing_and_are_validated():
    params = config.load_params("distill", profile="smoke", ablations={"no-ce": {"alpha_ce": 0}, "rand": {"random_init": True}})
    no_ce = params.variant("no-ce")
    assert (no_ce.run_name, no_ce.alpha_ce, no_ce.alpha_mlm, no_ce.ablations) == ("no-ce", 0, params.alpha_mlm, {})
    assert no_ce.teacher == params.teacher and no_ce.run_dir == params.run_dir
    assert params.variant("rand").random_init and not params.random_init
    for ablations, message in [({"x": {"alpha_ce": 0, "alpha_mlm": 0, "alpha_cos": 0}}, "nothing to train"),
                               ({"x": {"colour": 1}}, "unknown parameter"),
                               ({"x": {"temperature": "hot"}}, "expected float"),
                               ({"x": {"teacher": "other"}}, "cannot change 'teacher'"),
                               ({"x": {}}, "as a mapping"),
                               ({"student": {"alpha_ce": 0}}, "run names must differ")]:
        with pytest.raises(config.ParameterError, match=message) as err:
            config.load_params("distill", profile="smoke", ablations=ablations)
        assert err.value.name == "ablations"


def test_unknown_stage_and_missing_profile_file():
    with pytest.raises(config.ParameterError, match="unknown stage"):
        config.load_params("pretrain")
    with pytest.raises(config.ParameterError, match="no parameter file"):
        config.profile_values("nonexistent", "distill")


@pytest.mark.parametrize("profile", config.PROFILES)
@pytest.mark.parametrize("stage", list(config.STAGES))
def test_every_profile_file_is_valid(profile, stage, shared_hub_or_none):
    if profile in ("cpu", "gpu") and shared_hub_or_none is None:
        pytest.skip(f"the {profile} profile reads the offline mirror, absent here")
    params = config.load_params(stage, profile=profile)
    assert params.profile == profile


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_cpu_sized_profiles_bound_their_distillation(profile):
    # without max_steps a run trains n_epoch full epochs of its corpus: hours on 2 cores for the cpu corpus (a
    # YAML edit once dropped the line, and the run started on 13,626 steps)
    with open(config.REPO_ROOT / "params" / profile / "02_distill.yaml") as f:
        assert isinstance(yaml.safe_load(f).get("max_steps"), int), f"params/{profile}/02_distill.yaml: max_steps"


@pytest.fixture
def shared_hub_or_none():
    from conftest import SHARED_HUB
    return SHARED_HUB if SHARED_HUB.is_dir() else None


@pytest.mark.parametrize("stage", list(config.STAGES))
def test_notebook_parameters_cell_lists_exactly_the_stage_fields_with_their_help(stage):
    from lib import pipeline
    notebook = pipeline.read_notebook(stage)  # as papermill runs it and Colab opens it (lib.colab.clean_notebook)
    cell = next(c.source for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    found = re.findall(r"^([a-z]\w*) = (.*?)  # (.*)$", cell, flags=re.M)
    expected = [(f.name, '"smoke"' if f.name == "profile" else "None", f.metadata["help"])
                for f in dataclasses.fields(config.STAGES[stage].params)]
    assert found == expected  # the comment is the field's help (lib.config.param), word for word
    assert len(re.findall(r"^[a-z]\w* = ", cell, flags=re.M)) == len(expected)  # no line without its help
    assert cell.splitlines()[-1].startswith("_project_commit = None  # ")  # what lib.colab finds the cell by


@pytest.mark.parametrize("stage", list(config.STAGES))
def test_the_tracked_parameters_cell_is_short_and_says_how_to_set_a_parameter(stage):
    # the list is generated from lib/config.py (lib.pipeline.read_notebook), so notebooks share no copy of it
    source = (REPO_ROOT / "notebooks" / f"{config.STAGES[stage].notebook}.py").read_text()
    cell = re.split(r'# %% tags=\["parameters".*\]\n', source, maxsplit=1)[1].split("\n# %%", 1)[0]
    assert re.findall(r"^(\w+) = (.*)$", cell, flags=re.M) == [("profile", '"smoke"')]
    assert cell.startswith("# Stage parameters") and "`name = value`" in cell and "lib.pipeline --help" in cell


def test_the_generated_parameters_cell_keeps_the_values_and_statements_of_the_tracked_one():
    from lib import pipeline
    tracked = '# Stage parameters: a note\nprofile = "t4"  # mine\nmax_steps = 3\nx = 1  # kept\n'
    cell = pipeline.parameters_cell("distill", tracked).splitlines()
    assert cell[0] == "# Stage parameters: a note"
    assert cell[1] == 'profile = "t4"  # ' + config.parameter_help(config.DistillParams)[0][2]
    assert any(line.startswith("max_steps = 3  # optimizer steps") for line in cell)
    assert cell[-2:] == ["x = 1  # kept", cell[-1]] and cell[-1].startswith("_project_commit = None")
    given = pipeline.parameters_cell("distill", "_project_commit = 'abc'\n")
    assert given.splitlines()[-1] == "_project_commit = 'abc'" and given.count("_project_commit") == 1


@pytest.mark.parametrize("stage", list(config.STAGES))
def test_every_parameter_has_a_one_line_help(stage):
    for name, default, help in config.parameter_help(config.STAGES[stage].params):
        assert help and "\n" not in help and len(f"{name} = None  # {help}") <= 120, name
    assert ("seed", 56, "random seed (56: the authors')") in config.parameter_help(config.STAGES[stage].params)


def test_list_and_dict_defaults_are_not_shared_between_instances():
    a, b = config.DistillParams(), config.DistillParams()
    a.adam_betas.append(1.0)
    a.ablations["x"] = {}
    assert b.adam_betas == [0.9, 0.98] and b.ablations == {}


def test_numbers_written_as_strings_are_read_as_numbers_only_for_numeric_fields():
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; papermill -r / -y and params files can hand over strings
    params = config.load_params("distill", {"profile": "smoke", "learning_rate": "1e-3", "max_steps": "20"})
    assert params.learning_rate == 0.001 and params.max_steps == 20 and isinstance(params.max_steps, int)
    assert config.load_params("distill", profile="smoke", run_name="1e3").run_name == "1e3"  # a str field stays str
    with pytest.raises(config.ParameterError, match="expected int, got str '2.5'"):
        config.load_params("distill", profile="smoke", batch_size="2.5")
    from lib import pipeline
    assert pipeline._for_stage("distill", pipeline.parse_overrides(["learning_rate=1e-3"])) == {"learning_rate": 0.001}


def test_a_parameter_name_rebound_to_a_module_is_refused():
    with pytest.raises(config.ParameterError) as err:  # an import that shadows an injected parameter
        config.load_params("glue", {"profile": "smoke", "tasks": config})
    assert err.value.name == "tasks" and "import it under another name" in str(err.value)


def test_names_papermill_injected_must_be_stage_fields():
    injected = '# Parameters\nprofile = "smoke"\ndata = 5\n'
    history = ["", "profile = None\nmax_steps = None\n", injected, "from lib import data"]
    with pytest.raises(config.ParameterError) as err:  # `data` was since rebound to a module: still caught
        config.load_params("distill", {"profile": "smoke", "data": config, "In": history})
    assert err.value.name == "data" and "papermill -p" in str(err.value)
    history[2] = '# Parameters\nprofile = "smoke"\nmax_steps = 3\n'
    assert config.load_params("distill", {"profile": "smoke", "max_steps": 3, "In": history}).max_steps == 3


# The authors' released recipe, as ../shared/REFERENCE.md ("The released recipe") states it: the loss weights and
# temperature, the masking, AdamW and its schedule, the batch, the length limits, the seed and the layer map.
RELEASED_RECIPE = {
    "alpha_ce": 5.0, "alpha_mlm": 2.0, "alpha_cos": 1.0, "temperature": 2.0, "restrict_ce_to_mask": False,
    "mlm_mask_prop": 0.15, "word_mask": 0.8, "word_keep": 0.1, "word_rand": 0.1, "mlm_smoothing": 0.7,
    "learning_rate": 5e-4, "adam_betas": [0.9, 0.98], "adam_epsilon": 1e-6, "weight_decay": 0.0, "warmup_prop": 0.05,
    "n_epoch": 3, "max_grad_norm": 5.0, "batch_size": 5, "gradient_accumulation_steps": 50,
    "effective_batch_size": 2000, "seed": 56, "max_length": 512, "min_length": 12,
    "student_layers": [0, 2, 4, 7, 9, 11],
}


def test_the_paper_profile_spells_out_the_released_recipe():
    written = config.profile_values("paper", config.DISTILL)
    assert {k: written.get(k) for k in RELEASED_RECIPE} == RELEASED_RECIPE  # written in the file, not defaulted
    params = config.load_params(config.DISTILL, profile="paper")
    assert {k: getattr(params, k) for k in RELEASED_RECIPE} == RELEASED_RECIPE
    defaults = config.DistillParams()  # the defaults are the recipe too (but the layer map, spread evenly)
    assert {k: getattr(defaults, k) for k in RELEASED_RECIPE if k not in ("effective_batch_size", "student_layers")} \
        == {k: v for k, v in RELEASED_RECIPE.items() if k not in ("effective_batch_size", "student_layers")}


def _released_recipe_from_reference(text):
    """RELEASED_RECIPE's values read from REFERENCE.md's prose (one regular expression per fact)."""
    section = " ".join(text.split("## The released recipe", 1)[1].split("\n## ", 1)[0].split())
    number = r"([0-9.e-]+)"

    def find(pattern):
        match = re.search(pattern, section)
        assert match, f"REFERENCE.md no longer says {pattern!r}"
        return match.groups()

    ce, mlm, cos = map(float, find(rf"Loss = {number} \* L_ce \+ {number} \* L_mlm \+ {number} \* L_cos"))
    masked, mask, rand, keep = map(float, find(rf"{number}% of tokens are prediction targets; of those {number}% -> "
                                               rf"\[MASK\], {number}% random token, {number}% unchanged"))
    lr, beta1, beta2, eps = map(float, find(rf"AdamW lr {number}, betas \({number}, {number}\), eps {number}"))
    warmup, epochs, clip = find(rf"{number}% linear warmup then linear decay, {number} epochs, grad clip {number}")
    batch, accum, per_step, gpus = find(rf"{number} sequences x {number} accumulation per GPU \(([0-9,]+) per step "
                                        rf"on {number} GPUs\)")
    layers = find(r"teacher layers \[([0-9, ]+)\]")[0]
    return {
        "alpha_ce": ce, "alpha_mlm": mlm, "alpha_cos": cos, "temperature": float(find(rf"T = {number}")[0]),
        "restrict_ce_to_mask": not find(r"restricting it to masked positions was an option, (off) in the release")[0],
        "mlm_mask_prop": masked / 100, "word_mask": mask / 100, "word_keep": keep / 100, "word_rand": rand / 100,
        "mlm_smoothing": float(find(rf"max\(count, 1\)\^-{number}")[0]),
        "learning_rate": lr, "adam_betas": [beta1, beta2], "adam_epsilon": eps,
        "weight_decay": 0.0 if "no weight decay" in section else None, "warmup_prop": float(warmup) / 100,
        "n_epoch": int(epochs), "max_grad_norm": float(clip), "batch_size": int(batch),
        "gradient_accumulation_steps": int(accum), "effective_batch_size": int(per_step.replace(",", "")),
        "seed": int(find(r"seed (\d+)")[0]), "max_length": int(find(r"max length (\d+)")[0]),
        "min_length": int(find(r"sequences of <= (\d+) tokens dropped")[0]) + 1,
        "student_layers": [int(x) for x in layers.split(",")],
    } | {"_gpus": int(gpus)}


def test_the_paper_profile_matches_reference_md():
    reference = REPO_ROOT.parent / "shared" / "REFERENCE.md"
    if not reference.is_file():
        pytest.skip(f"{reference} is not present (the shared folder is outside the repository)")
    stated = _released_recipe_from_reference(reference.read_text())
    gpus = stated.pop("_gpus")
    assert stated["effective_batch_size"] == stated["batch_size"] * stated["gradient_accumulation_steps"] * gpus
    assert stated == RELEASED_RECIPE  # the table above is REFERENCE.md's
    written = config.profile_values("paper", config.DISTILL)
    assert {k: written.get(k) for k in stated} == stated


# ------------------------------------------------------------------------------------------- one stage protocol

@pytest.mark.parametrize("stage", list(config.STAGES))
def test_every_stage_runs_through_one_signature(stage):
    import inspect
    run = config.STAGES[stage].run_function()  # "module:function" in the registry, imported on use
    assert list(inspect.signature(run).parameters) == ["params", "progress"]
    assert inspect.signature(run).parameters["progress"].default is True
    assert config.stage_of(config.STAGES[stage].params.__new__(config.STAGES[stage].params)) == stage
    assert config.stage_by_notebook(config.STAGES[stage].notebook) == stage


_RAN = []


def _fake_run(params, progress=True):
    _RAN.append((config.stage_of(params), params.seed, progress))
    return "result"


def test_the_notebooks_and_command_lines_run_a_stage_through_the_registry(monkeypatch):
    import lib
    from lib import pipeline, preflight
    monkeypatch.setitem(config.STAGES, "latency", config.STAGES["latency"]._replace(run="test_config:_fake_run"))
    monkeypatch.setattr(preflight, "check", lambda params: None)  # no models needed: the run is a stand-in
    _RAN.clear()
    assert lib.run_stage(config.load_params("latency", seed=3)) == "result"
    assert pipeline.stage_main("latency", ["-p", "seed=4", "--no-progress"]) == 0
    assert _RAN == [("latency", 3, True), ("latency", 4, False)]
    assert pipeline.stage_main("latency", ["-p", "warmups=1"]) == 1 and len(_RAN) == 2  # refused before the run
    with pytest.raises(config.ParameterError, match="no stage"):
        config.stage_of(object())
