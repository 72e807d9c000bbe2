"""lib.results: provenance, atomic writes, and the schema every results file is written and read through."""
import dataclasses
import json
import os
from pathlib import Path

import pytest

from lib import REPO_ROOT, config, results

PROVENANCE = {"created": "2026-11-21T05:00:00+00:00", "git_commit": "0123456789abcdef", "versions": {},
              "hardware": {"cpu_count": 2, "gpu": None}, "profile": "cpu", "scale": "cpu scale", "params": {}}
_SUMMARY_ROW = {"model": "teacher", "task": "cola", "metric": "score", "median": 50.0, "min": 40.0, "max": 60.0,
                "std": 8.2, "n": 3, "single_class_seeds": 0, "majority_rate": 69.1, "single_class_tasks": None,
                "retention": 100.0}
# the fields of each kind (besides name, wall_time_s and provenance), in the shapes the stages write
FIELDS = {
    "teacher": dict(teacher="sentence-transformers/all-MiniLM-L6-v2", saved_to="runs/cpu/teacher",
                    parameters=22_713_216, layers=6, hidden_size=384, had_mlm_head=False, adapted=True,
                    heldout_sequences=200, mlm_before={"mlm_accuracy": 0.01, "loss": 9.1},
                    mlm_after={"mlm_accuracy": 0.4, "loss": 3.2}),
    "teacher_logits": dict(text="the [MASK] sat", position=2, tokens=["cat", "dog"], logits=[9.5, 7.25],
                           answer="cat", answer_rank=0, temperatures=[1, 2], logsumexp=[9.75, 4.9]),
    "distill": dict(teacher="runs/cpu/teacher", student_dir="runs/cpu/student", teacher_parameters=22_713_216,
                    student_parameters=17_241_216, student_layers=[0, 2, 4], steps=40, total_steps=40,
                    steps_per_epoch=20, warmup_steps=2, epochs=2.0, tokens=51_200, tokens_per_s=4591.5,
                    resumed_from=None, precision="float32", world_size=1, final={"loss": 9.16, "loss_ce": 4.0},
                    log_path="runs/cpu/student/log.jsonl", checkpoint="runs/cpu/student/checkpoint-40",
                    segments=[{"start_step": 0, "params": {"alpha_ce": 5.0}}], weights_sha1="ab" * 20,
                    gradient_accumulation_steps=50, effective_batch_size=250,
                    loss_curve=[{"step": 10, "tokens": 12_800, "loss": 10.5, "loss_ce": 4.5}],
                    heldout={"step": 40, "tokens": 51_200, "mlm_accuracy": 0.31, "kl_to_teacher": 1.25,
                             "perplexity": 40.1, "loss": 3.69, "n_tokens": 19_200, "n_sequences": 1000, "seconds": 20.5},
                    heldout_curve=[{"step": 0, "tokens": 0, "mlm_accuracy": 0.2, "kl_to_teacher": 2.5,
                                    "perplexity": 90.0, "loss": 4.5, "n_tokens": 19_200, "n_sequences": 1000,
                                    "seconds": 20.1}],
                    heldout_reference={"teacher": {"mlm_accuracy": 0.42, "kl_to_teacher": 0.0, "n_tokens": 19_200},
                                       "undistilled": {"mlm_accuracy": 0.2, "kl_to_teacher": 2.5, "n_tokens": 19_200}}),
    "glue": dict(summary=[_SUMMARY_ROW], runs=3),
    "imdb_squad": dict(summary=[{**_SUMMARY_ROW, "task": "imdb", "metric": "accuracy"}], runs=2),
    "latency": dict(table3=[{"model": "teacher", "extrapolated_total_s": 20.3, "parameters": 22_713_216,
                             "params_m": 22.7, "size_mb": 90.9, "n_examples": 150, "per_example_ms_median": 13.2,
                             "reference": "teacher"}],
                    sweep=[{"model": "teacher", "seq_len": 128, "batch_size": 1, "latency_ms": 13.0}],
                    size_quality=[{"model": "teacher", "source": "this run", "params_m": 22.7, "size_mb": 90.9,
                                   "relative_latency": 1.0, "glue_score": 61.5, "note": ""}]),
    "finetune_run": dict(model="student", task="cola", model_path="runs/cpu/student", seed=1, teacher_path=None,
                         metrics={"matthews": 12.5, "score": 12.5}, score=12.5,
                         metrics_by_split={"validation": {"matthews": 12.5, "score": 12.5}},
                         predictions={"validation": {"n": 9, "predicted_label_counts": {"0": 2, "1": 7}}},
                         train={"features": 100, "steps": 13, "loss": 0.6, "seconds": 4.2},
                         hparams={"learning_rate": 2e-5, "n_epoch": 1}, single_class=False, majority_rate=69.1,
                         run_key={"model": "0123456789abcdef", "task": "cola", "seed": 1}, provenance=PROVENANCE),
    "gpu_check": dict(name="gpu-check", gpu="Tesla T4", dry_run=False, passed=True, failed=[],
                      checks={"precision": {"status": "pass", "seconds": 0.1}},
                      throughput={"t4": {"micro_batch": [32, 256], "tokens_per_s": 9e4, "mfu": 0.3}},
                      model="BERT-base (random init) -> 6-layer DistilBERT", wall_time_s=101.5, provenance=PROVENANCE),
}
PATHS = {"teacher": "cpu/teacher.json", "teacher_logits": "cpu/teacher_logits.json",
         "distill": "cpu/distill-student.json", "glue": "cpu/glue.json", "imdb_squad": "cpu/imdb_squad.json",
         "latency": "cpu/latency.json", "finetune_run": "cpu/glue/student/cola-seed1.json",
         "gpu_check": "gpu-check/Tesla-T4.json"}


def example_record(kind, **fields):
    """A valid record of ``kind`` (FIELDS, updated with ``fields``)."""
    values = {**FIELDS[kind], **fields}
    if "provenance" not in FIELDS[kind]:  # a stage results file: the envelope
        values = {"name": Path(PATHS[kind]).stem, "wall_time_s": 12.5, "provenance": PROVENANCE, **values}
    return results.KINDS[kind](**values)


def test_every_kind_has_an_example_and_a_path():
    assert set(FIELDS) == set(PATHS) == set(results.KINDS)
    for kind, path in PATHS.items():
        assert results.kind_of(Path("results") / path) == kind


@pytest.mark.parametrize("kind", sorted(results.KINDS))
def test_every_kind_round_trips_through_the_schema(tmp_path, kind):
    record = example_record(kind)
    path = results.write(tmp_path / PATHS[kind], record)
    assert results.read(path) == record
    written = json.loads(path.read_text())
    assert list(written)[-1] == "provenance" and set(written) == {f.name for f in dataclasses.fields(record)}


@pytest.mark.parametrize("path", results.results_files(REPO_ROOT / "results"), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_committed_results_file_reads(path):
    record = results.read(path)
    assert type(record) is results.KINDS[results.kind_of(path)]


def test_every_committed_predictions_file_is_named_by_its_run_and_read_by_no_other_reader():
    predictions = sorted((REPO_ROOT / "results").rglob(f"{results.PREDICTIONS}/*.json"))
    named = {REPO_ROOT / record.predictions_file for path in results.results_files(REPO_ROOT / "results")
             if results.kind_of(path) == "finetune_run" and (record := results.read(path)).predictions_file}
    assert set(predictions) == named
    assert not set(predictions) & set(results.results_files(REPO_ROOT / "results"))


def test_unknown_missing_or_mistyped_fields_name_the_file_and_the_field(tmp_path):
    data = results.to_dict(example_record("teacher"))
    path = tmp_path / "cpu" / "teacher.json"
    for broken, message in (({**data, "extra_field": 1}, "unknown field(s) extra_field"),
                            ({k: v for k, v in data.items() if k != "layers"}, "missing field(s) layers"),
                            ({**data, "layers": "six"}, "field 'layers' should be <class 'int'>, got str")):
        results.write_json(path, broken)
        with pytest.raises(ValueError, match="teacher.json") as err:
            results.read(path)
        assert message in str(err.value)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="teacher.json is not valid JSON"):
        results.read(path)
    with pytest.raises(ValueError, match="not a results file of a known kind"):
        results.kind_of(tmp_path / "cpu" / "notes.json")
    with pytest.raises(ValueError, match="field 'layers' should be"):  # a writer is checked too
        results.write(tmp_path / "cpu" / "teacher.json", dataclasses.replace(example_record("teacher"), layers=None))


def test_older_files_read_through_the_one_legacy_conversion(tmp_path):
    data = results.to_dict(example_record("distill"))
    for name in ("segments", "weights_sha1", "gradient_accumulation_steps", "effective_batch_size", "heldout",
                 "heldout_curve", "heldout_reference"):
        del data[name]
    data["checkpoint_dir"] = data.pop("checkpoint")
    results.write_json(tmp_path / "cpu" / "distill-student.json", data)
    record = results.read(tmp_path / "cpu" / "distill-student.json")
    assert record.checkpoint == "runs/cpu/student/checkpoint-40" and record.weights_sha1 is None
    assert record.heldout is record.heldout_curve is record.heldout_reference is None  # before held-out measures


def test_paths_are_stored_relative_to_the_repository():
    assert results.repo_relative(REPO_ROOT / "runs" / "cpu" / "student") == "runs/cpu/student"
    assert results.repo_relative("/content/drive/MyDrive/runs/t4") == "/content/drive/MyDrive/runs/t4"
    assert results.repo_relative("runs/cpu/teacher") == "runs/cpu/teacher"
    assert results.repo_relative("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert results.repo_relative(None) is None


def _strings(value):
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_no_committed_result_holds_a_machine_s_absolute_path():
    # paths into a checkout are stored relative to it; only Colab's Drive (/content/...) stays absolute
    for path in (REPO_ROOT / "results").rglob("*.json"):
        absolute = [s for s in _strings(json.loads(path.read_text())) if s.startswith("/") and
                    not s.startswith("/content/")]
        assert not absolute, (path, absolute)


def test_result_carries_provenance_and_scale(tmp_path):
    params = config.load_params("latency", profile="smoke", results_dir=str(tmp_path))
    record = results.write_result(params, "latency", 1.23456, **FIELDS["latency"])
    path = tmp_path / "latency.json"
    assert results.read(path) == record
    record = json.loads(path.read_text())
    assert record["table3"] == FIELDS["latency"]["table3"] and record["wall_time_s"] == 1.235
    prov = record["provenance"]
    assert prov["profile"] == "smoke" and "not a finding" in prov["scale"]
    assert prov["params"]["results_dir"] == str(tmp_path)
    assert set(prov["versions"]) >= {"python", "torch", "transformers"}
    assert prov["hardware"]["cpu_count"] >= 1 and "torch_threads" in prov["hardware"]
    assert len(prov["git_commit"]) >= 7


def test_a_results_file_gets_the_permissions_of_any_new_file(tmp_path):
    previous = os.umask(0o027)
    try:
        path = results.write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600


def test_write_json_is_atomic_and_handles_numpy(tmp_path):
    import numpy as np
    path = results.write_json(tmp_path / "a" / "r.json", {"x": np.float32(0.5), "v": np.arange(3)})
    assert json.loads(path.read_text()) == {"x": 0.5, "v": [0, 1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left behind


def test_rewritten_outputs_do_not_mark_the_commit_dirty(tmp_path):
    import shutil
    import subprocess
    import sys
    repo = tmp_path / "repo"
    shutil.copytree(results.REPO_ROOT / "lib", repo / "lib")
    (repo / "results").mkdir()
    (repo / "results" / "r.json").write_text("{}")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run(git + args, cwd=repo, check=True, capture_output=True)

    def commit():  # lib.results.git_commit as seen from that checkout
        code = "import sys; sys.path.insert(0, '.'); from lib import results; print(results.git_commit())"
        return subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True).stdout.strip()

    (repo / "results" / "r.json").write_text('{"new": 1}')
    assert len(commit()) == 40  # a rewritten result is not a code change
    (repo / "lib" / "results.py").write_text((repo / "lib" / "results.py").read_text() + "\n# edit\n")
    assert commit().endswith("-dirty")


def test_results_name_the_commit_pinned_when_the_stage_started(tmp_path, monkeypatch):
    # a stage pins the commit as it starts; edits to the tree during a long run do not re-label its results
    commits = iter(["a" * 40, "b" * 40 + "-dirty"])
    monkeypatch.setattr(results, "git_commit", lambda: next(commits))
    monkeypatch.setattr(results, "_pinned_commit", None)
    assert results.pin_commit() == "a" * 40
    params = config.load_params("latency", profile="smoke", results_dir=str(tmp_path))
    record = results.write_result(params, "latency", 1.0, **FIELDS["latency"])
    assert record.provenance["git_commit"] == "a" * 40
    monkeypatch.setattr(results, "_pinned_commit", None)  # outside a stage: the commit at write time
    assert results.provenance()["git_commit"] == "b" * 40 + "-dirty"


def _profile_folders():
    return sorted(p for p in (REPO_ROOT / "results").iterdir() if p.is_dir() and p.name in config.PROFILES)


@pytest.mark.parametrize("folder", _profile_folders(), ids=lambda p: p.name)
def test_a_committed_profile_comes_from_one_clean_commit_and_so_do_its_executed_notebooks(folder):
    commits = {results.read(path).provenance["git_commit"] for path in results.results_files(folder)}
    assert len(commits) == 1, (folder.name, commits)
    commit = commits.pop()
    assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit), commit  # a full hash, never -dirty
    for notebook in sorted((REPO_ROOT / "book" / "stages" / folder.name).glob("*.ipynb")):
        parameters = json.loads(notebook.read_text())["metadata"]["papermill"]["parameters"]
        assert parameters.get("_project_commit") == commit, notebook.name


def test_every_profile_has_a_scale_label_for_the_book():
    assert set(results.SCALE_LABELS) == set(config.PROFILES)
