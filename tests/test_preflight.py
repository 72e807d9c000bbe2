"""lib.preflight: a stage's inputs and output folders checked in seconds, before any model loads."""
import time
from collections import namedtuple

import pytest

from lib import config, pipeline, preflight
from lib.config import ParameterError


def distill(**overrides):
    # smoke/tiny-bert: the synthetic 4-layer teacher (its config is all preflight reads)
    return config.load_params("distill", profile="smoke", teacher="smoke/tiny-bert", **overrides)


def test_the_smoke_distill_stage_passes(tmp_path):
    preflight.check(distill(run_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results")))


def test_unwritable_results_dir_is_refused_before_any_stage_runs(tmp_path, capsys):
    # we run as root, for whom chmod does not make a folder read-only: a results_dir below a regular file cannot
    # be created by anyone, which is what preflight's probe meets (a read-only mount fails the same probe write)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    started = time.perf_counter()
    code = pipeline.main(["--stages", "teacher,distill", "-p", f"results_dir={blocker / 'results'}",
                          "-p", f"run_dir={tmp_path / 'runs'}", "--output-dir", str(tmp_path / "nb")])
    assert code == 1 and time.perf_counter() - started < 10
    assert f"parameter 'results_dir': {blocker / 'results'} cannot be created: {blocker} is a file" in capsys.readouterr().err
    assert not (tmp_path / "nb").exists() and not (tmp_path / "runs").exists()  # nothing ran


def test_empty_corpus_is_refused_naming_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ParameterError) as err:
        preflight.check(distill(corpus=[{"path": str(empty)}], run_dir=str(tmp_path)))
    assert err.value.name == "corpus" and f"text file {empty} is empty" in str(err.value)
    short = tmp_path / "short.txt"
    short.write_text("a few words\n" * 100)  # 3 words + [CLS]/[SEP] < min_length 12
    with pytest.raises(ParameterError, match="no line has the 12 tokens") as err:
        preflight.check(distill(corpus=[{"path": str(short)}], run_dir=str(tmp_path)))
    assert err.value.name == "corpus"
    few = tmp_path / "few.txt"
    few.write_text(" ".join(["word"] * 20) + "\n" * 1 + (" ".join(["word"] * 20) + "\n") * 9)  # 10 sequences
    with pytest.raises(ParameterError, match=r"about 10 sequences.*\(16: batch_size") as err:  # 8 x 2
        preflight.check(distill(corpus=[{"path": str(few)}], run_dir=str(tmp_path)))
    assert err.value.name == "corpus"
    preflight.check(distill(corpus=[{"path": str(few)}], run_dir=str(tmp_path), batch_size=5, gradient_accumulation_steps=2))


def test_hub_corpus_id_split_and_column_must_exist(tmp_path):
    for source, message in [({"id": "smoke/corpus", "split": "validation"}, "no split 'validation'; splits: \\['test', 'train'\\]"),
                            ({"id": "smoke/corpus", "column": "body"}, "no column 'body'; columns: \\['text'\\]")]:
        with pytest.raises(ParameterError, match=message) as err:
            preflight.check(distill(corpus=[source], run_dir=str(tmp_path)))
        assert err.value.name == "corpus"


def test_missing_models_are_named_with_the_stage_that_makes_them(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(ParameterError) as err:
        preflight.check(config.load_params("distill", profile="smoke", run_dir=str(runs)))
    assert str(err.value) == (f"parameter 'teacher': {runs}/teacher not found — it is produced by stage 'teacher' "
                              "(01_teacher); run that stage first")
    with pytest.raises(ParameterError) as err:
        preflight.check(config.load_params("glue", profile="smoke", run_dir=str(runs),
                                           models={"bert": "smoke/tiny-bert", "student": f"{runs}/student"}))
    assert err.value.name == "models.student" and "stage 'distill' (02_distill)" in str(err.value)
    # a later stage of the same pipeline run writes them: not checked yet
    preflight.check(config.load_params("glue", profile="smoke", run_dir=str(runs)), pending=("teacher", "distill"))


def test_student_deeper_than_the_teacher_is_refused_from_its_config(tmp_path):
    with pytest.raises(ParameterError) as err:
        preflight.check(distill(student_layers=[0, 2, 5], run_dir=str(tmp_path)))
    assert err.value.name == "student_layers" and "layers 0..3" in str(err.value)


def test_too_little_disk_space_names_run_dir_with_needed_and_free(tmp_path, monkeypatch):
    # 2-layer student of the 64-wide smoke teacher: two slots (12 bytes/parameter) + final model (4)
    needed, _ = preflight.disk_space(distill(run_dir=str(tmp_path)), preflight.teacher_config(distill()))
    assert needed == 28 * preflight.bert_parameters(preflight.teacher_config(distill()), 2)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: usage(10 ** 9, 10 ** 9, 1000))
    with pytest.raises(ParameterError) as err:
        preflight.check(distill(run_dir=str(tmp_path)))
    assert err.value.name == "run_dir"
    assert f"{tmp_path} has 1e-06 GB free, the stage needs about {needed / 1e9:.3g} GB" in str(err.value)
