import dataclasses
import re

import pytest

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
    if profile == "cpu" and shared_hub_or_none is None:
        pytest.skip("the cpu profile reads the offline mirror, absent here")
    params = config.load_params(stage, profile=profile)
    assert params.profile == profile


@pytest.fixture
def shared_hub_or_none():
    from conftest import SHARED_HUB
    return SHARED_HUB if SHARED_HUB.is_dir() else None


@pytest.mark.parametrize("stage", list(config.STAGES))
def test_notebook_parameters_cell_lists_exactly_the_stage_fields_with_their_help(stage):
    source = (REPO_ROOT / "notebooks" / f"{config.STAGES[stage].notebook}.py").read_text()
    cell = re.split(r'# %% tags=\["parameters".*\]\n', source, maxsplit=1)[1].split("\n# %%", 1)[0]
    found = re.findall(r"^([a-z]\w*) = (.*?)  # (.*)$", cell, flags=re.M)
    expected = [(f.name, '"smoke"' if f.name == "profile" else "None", f.metadata["help"])
                for f in dataclasses.fields(config.STAGES[stage].params)]
    assert found == expected  # the comment is the field's help (lib.config.param), word for word
    assert len(re.findall(r"^[a-z]\w* = ", cell, flags=re.M)) == len(expected)  # no line without its help


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
