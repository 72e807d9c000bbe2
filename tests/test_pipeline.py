"""Stage notebooks executed end to end through papermill, on the smoke profile, into temporary folders."""
import json

import papermill
import pytest

from lib import config, pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    overrides = {"run_dir": str(tmp / "runs"), "results_dir": str(tmp / "results")}
    outputs = pipeline.run("smoke", overrides=overrides, output_dir=tmp / "notebooks", log_output=False)
    return tmp, outputs


def test_every_stage_executes_and_writes_results_with_provenance(smoke_run):
    tmp, outputs = smoke_run
    assert [p.name for p in outputs] == [f"{stage.notebook}.ipynb" for stage in config.STAGES.values()]
    names = {"teacher", "distill-student", "glue", "imdb_squad", "latency"}
    for name in names:
        record = json.loads((tmp / "results" / f"{name}.json").read_text())
        assert record["provenance"]["profile"] == "smoke"
        assert record["provenance"]["params"]["results_dir"] == str(tmp / "results")
        assert record["wall_time_s"] > 0


def test_the_student_is_a_loadable_model_directory(smoke_run):
    from transformers import AutoModel, AutoTokenizer
    tmp, _ = smoke_run
    model = AutoModel.from_pretrained(tmp / "runs" / "student")
    tokenizer = AutoTokenizer.from_pretrained(tmp / "runs" / "student")
    assert model.config.model_type == "distilbert"
    out = model(**tokenizer("alice likes the lovely cat .", return_tensors="pt", return_token_type_ids=False))
    assert out.last_hidden_state.shape[-1] == model.config.dim


def test_saved_models_are_hub_native_with_a_model_card(smoke_run):
    import yaml
    from transformers import AutoModel

    from lib import finetune, models
    tmp, _ = smoke_run
    commit = json.loads((tmp / "results" / "teacher.json").read_text())["provenance"]["git_commit"]
    teacher, _ = models.read_model_card(tmp / "runs" / "teacher")
    assert teacher["base_model"] == "smoke/tiny-bert" and teacher["pipeline_tag"] == "fill-mask"
    record = json.loads((tmp / "results" / "distill-student.json").read_text())
    card = (tmp / "runs" / "student" / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "transformers" and front["base_model"] == "smoke/tiny-bert"  # via stage 1's
    assert f"`{record['provenance']['git_commit']}`" in card and commit in card
    assert "| final loss |" in card and "| mlm_accuracy |" in card  # its losses and held-out measures
    # the card is no weights, config or tokenizer file: the weights' digest and the fine-tuning key are unchanged
    assert finetune.model_fingerprint(tmp / "runs" / "student") == json.loads(next(
        (tmp / "results" / "glue" / "student").glob("*.json")).read_text())["run_key"]["model"]
    assert AutoModel.from_pretrained(tmp / "runs" / "student").config.model_type == "distilbert"


def test_executed_notebooks_list_every_parameter_with_its_help(smoke_run):
    import nbformat
    _, outputs = smoke_run
    for output, stage in zip(outputs, config.STAGES.values()):
        cell = next(c for c in nbformat.read(output, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        for name, _, help in config.parameter_help(stage.params):
            assert f"{name} = " in cell.source and f"  # {help}" in cell.source, (output.name, name)


def test_a_failing_stage_is_named(tmp_path):
    with pytest.raises(pipeline.StageFailed) as err:
        pipeline.run_stage("teacher", "smoke", {"teacher": "acme/no-such-model", "run_dir": str(tmp_path)},
                           output_dir=tmp_path, log_output=False)
    assert err.value.stage == "teacher"
    # the notebook's preflight (lib.notebook_setup) names the parameter before any model loads
    assert "ParameterError: parameter 'teacher'" in str(err.value) and "acme/no-such-model" in str(err.value)


def test_papermill_itself_rejects_an_unknown_parameter_inside_the_notebook(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(pipeline.read_notebook("latency"), str(tmp_path / "out.ipynb"),
                                   parameters={"profile": "smoke", "warmups": 3}, cwd=str(pipeline.REPO_ROOT),
                                   kernel_name="python3", progress_bar=False)
    assert err.value.ename == "ParameterError" and "'warmups'" in err.value.evalue


def test_an_unknown_papermill_parameter_fails_even_when_an_import_rebinds_its_name(tmp_path):
    # `papermill 02_distill.ipynb -p data 5`: the notebook's `from lib import data` used to hide it
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(pipeline.read_notebook("distill"), str(tmp_path / "out.ipynb"),
                                   parameters={"profile": "smoke", "data": 5}, cwd=str(pipeline.REPO_ROOT),
                                   kernel_name="python3", progress_bar=False)
    assert err.value.ename == "ParameterError" and "parameter 'data': unknown parameter" in err.value.evalue


def test_the_runner_validates_every_stage_before_running_any(tmp_path, capsys):
    code = pipeline.main(["--stages", "teacher,distill", "-p", "temperature=0", "--output-dir", str(tmp_path)])
    assert code == 1
    assert "parameter 'temperature': must be > 0" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing ran
    assert pipeline.main(["--stages", "distil"]) == 1
    assert pipeline.main(["-p", "not_a_parameter=1"]) == 1


def test_the_glue_stage_runs_only_the_tasks_given(smoke_run):
    # `python -m lib.pipeline --stages glue -p tasks=[cola]`: the notebook's `tasks` parameter used to be replaced
    # by the `lib.tasks` module it imported, and the stage then ran all nine tasks
    tmp, _ = smoke_run
    results_dir = tmp / "results-cola-only"
    assert pipeline.main(["--stages", "glue", "-p", "tasks=[cola]", "-p", f"run_dir={tmp / 'runs'}", "-p",
                          f"results_dir={results_dir}", "--output-dir", str(tmp / "notebooks-cola-only")]) == 0
    summary = json.loads((results_dir / "glue.json").read_text())["summary"]
    assert {row["task"] for row in summary} <= {"cola", "glue"} and any(row["task"] == "cola" for row in summary)
    assert sorted(p.name.split("-seed")[0] for p in (results_dir / "glue").rglob("*.json")) == \
        ["cola"] * len(list((results_dir / "glue").rglob("*.json")))


def test_executed_notebooks_name_no_absolute_path_of_the_checkout(smoke_run):
    tmp, outputs = smoke_run
    for output in outputs:
        assert str(pipeline.REPO_ROOT) not in output.read_text(), output.name
