"""Faults in parameters and their files that the preflight (or validation) must refuse in seconds, naming the
parameter and the file, before a stage loads any model (issue 20's fault campaign)."""
import dataclasses
import shutil
import typing
from pathlib import Path

import pytest

from lib import config, hub, pipeline, preflight
from lib.config import ParameterError

TOKENIZER = ("vocab.txt", "tokenizer.json", "tokenizer_config.json")


def tiny():
    return Path(hub.resolve("smoke/tiny-bert"))  # the smoke profile's generated teacher: config, weights, tokenizer


def model_folder(path, *files):
    """A copy of the smoke teacher holding only ``files``."""
    path.mkdir(parents=True)
    for name in files:
        shutil.copy(tiny() / name, path / name)
    return path


def folders(tmp_path):
    return {"run_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results")}


def distill(tmp_path, **overrides):
    return config.load_params("distill", profile="smoke", **{"teacher": "smoke/tiny-bert", **folders(tmp_path),
                                                             **overrides})


def loop(tmp_path):
    """a -> b -> a"""
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "a").symlink_to(tmp_path / "b")
    return tmp_path / "a"


# 1. a model folder needs its weights and its tokenizer, not only a config

def test_config_only_teacher_folder_is_refused_naming_the_weights(tmp_path):
    teacher = model_folder(tmp_path / "teacher", "config.json", *TOKENIZER)
    with pytest.raises(ParameterError) as err:
        preflight.check(distill(tmp_path, teacher=str(teacher)))
    assert str(err.value) == (f"parameter 'teacher': {teacher} has no weights (none of *.safetensors, "
                              "pytorch_model*.bin, *.pt, *.pth, *.index.json), only a config: stage 'distill' loads its trained "
                              "weights; give a folder saved with save_pretrained")


def test_teacher_folder_without_a_tokenizer_is_refused(tmp_path):
    teacher = model_folder(tmp_path / "teacher", "config.json", "model.safetensors")
    for stage in ("teacher", "distill"):
        params = config.load_params(stage, profile="smoke", teacher=str(teacher), **folders(tmp_path))
        with pytest.raises(ParameterError) as err:
            preflight.check(params)
        assert str(err.value) == (f"parameter 'teacher': {teacher} has no tokenizer (none of tokenizer.json, "
                                  "vocab.txt, vocab.json, spiece.model, sentencepiece.bpe.model, tokenizer.model): "
                                  f"stage {stage!r} loads the tokenizer from the model's folder; save it there too "
                                  "(tokenizer.save_pretrained)")


def test_a_sharded_index_counts_as_weights(tmp_path):
    teacher = model_folder(tmp_path / "teacher", "config.json", *TOKENIZER)
    (teacher / "model.safetensors.index.json").write_text("{}")
    preflight.resolve_model(distill(tmp_path), "teacher", str(teacher))


def test_mirror_copy_without_weights_is_refused_for_fine_tuning_but_timed_by_latency(tmp_path):
    mirror = tmp_path / "mirror"
    model_folder(mirror / "acme" / "bert", "config.json", *TOKENIZER)  # like the mirror's bert-base-uncased
    glue = config.load_params("glue", profile="smoke", mirror=str(mirror), models={"acme": "acme/bert"},
                              **folders(tmp_path))
    with pytest.raises(ParameterError) as err:
        preflight.check(glue)
    assert err.value.name == "models.acme"
    assert f"acme/bert ({mirror / 'acme' / 'bert'}) has no weights" in str(err.value)
    assert "stage 'glue' loads its trained weights" in str(err.value)
    # latency times a config-only model with random weights: it passes, but it still needs the tokenizer
    latency = config.load_params("latency", profile="smoke", mirror=str(mirror), models={"acme": "acme/bert"},
                                 **folders(tmp_path))
    preflight.check(latency)
    (mirror / "acme" / "bert" / "vocab.txt").unlink()
    (mirror / "acme" / "bert" / "tokenizer.json").unlink()
    with pytest.raises(ParameterError, match="has no tokenizer") as err:
        preflight.check(latency)
    assert err.value.name == "models.acme"


def test_a_model_path_that_is_a_file_is_named_as_such(tmp_path):
    file = tmp_path / "model.bin"
    file.write_bytes(b"weights")
    with pytest.raises(ParameterError) as err:
        preflight.check(distill(tmp_path, teacher=str(file)))
    assert str(err.value) == f"parameter 'teacher': {file} is a file, not a model folder"


# 2. text that is not UTF-8

def test_corpus_file_that_is_not_utf8_is_refused_with_line_and_byte(tmp_path):
    corpus = tmp_path / "corpus.txt"
    good = (" ".join(["word"] * 40) + "\n").encode()
    corpus.write_bytes(good * 3 + b"caf\xe9 au lait\n" + good * 60)
    with pytest.raises(ParameterError) as err:
        preflight.check(distill(tmp_path, corpus=[{"path": str(corpus)}]))
    assert str(err.value) == (f"parameter 'corpus': text file {corpus} is not UTF-8: line 4, byte offset "
                              f"{3 * len(good) + 3} (0xe9); re-encode it as UTF-8 (e.g. iconv -f <its encoding> "
                              "-t UTF-8)")
    # the stage's loader decodes the whole file, so a bad byte past max_documents is refused too
    with pytest.raises(ParameterError, match="line 4"):
        preflight.check(distill(tmp_path, corpus=[{"path": str(corpus), "max_documents": 2}]))


def test_parameter_file_that_is_not_utf8_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "PARAMS_DIR", tmp_path)
    (tmp_path / "mine").mkdir()
    path = tmp_path / "mine" / "02_distill.yaml"
    path.write_bytes(b"# r\xe9sum\xe9 of the run\nmax_steps: 3\n")
    with pytest.raises(ParameterError) as err:
        config.load_params("distill", profile="mine")
    assert str(err.value) == (f"parameter 'profile': {path} is not UTF-8: line 1, byte offset 3 (0xe9); "
                              "re-encode it as UTF-8 (e.g. iconv -f <its encoding> -t UTF-8)")


# 3. NaN and infinity

def float_fields():
    for stage, spec in config.STAGES.items():
        for f in dataclasses.fields(spec.params):
            hint = typing.get_type_hints(spec.params)[f.name]
            if hint is float or float in typing.get_args(hint):
                yield stage, f.name


@pytest.mark.parametrize("stage, name", list(float_fields()))
def test_every_float_parameter_refuses_nan_and_infinity(stage, name):
    for value in (float("nan"), float("inf"), float("-inf"), "nan"):
        with pytest.raises(ParameterError) as err:
            config.load_params(stage, profile="smoke", **{name: value})
        assert str(err.value) == f"parameter {name!r}: must be a finite number, got {float(value)}"


def test_nan_inside_a_list_or_an_ablation_is_refused():
    with pytest.raises(ParameterError, match=r"'adam_betas': must be a finite number, got nan \(adam_betas\[0\]\)"):
        config.load_params("distill", profile="smoke", adam_betas=[float("nan"), 0.98])
    with pytest.raises(ParameterError) as err:
        config.load_params("distill", profile="smoke", ablations={"hot": {"temperature": float("inf")}})
    assert str(err.value) == ("parameter 'ablations': must be a finite number, got inf "
                              "(ablations['hot']['temperature'])")
    with pytest.raises(ParameterError, match=r"got nan \(task_overrides\['rte'\]\['n_epoch'\]\)"):
        config.load_params("glue", profile="smoke", task_overrides={"rte": {"n_epoch": float("nan")}})


def test_nan_from_yaml_and_from_the_command_line(tmp_path, monkeypatch, capsys):
    code = pipeline.main(["--stages", "distill", "-p", "learning_rate=nan", *sum(
        (["-p", f"{k}={v}"] for k, v in folders(tmp_path).items()), [])])
    assert code == 1
    assert "ERROR: parameter 'learning_rate': must be a finite number, got nan" in capsys.readouterr().err
    monkeypatch.setattr(config, "PARAMS_DIR", tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "02_distill.yaml").write_text("max_grad_norm: .inf\n")
    with pytest.raises(ParameterError, match="'max_grad_norm': must be a finite number, got inf"):
        config.load_params("distill", profile="mine")


# 4. symlink loops

@pytest.mark.parametrize("name, below", [("run_dir", ""), ("results_dir", "/sub")])
def test_output_folder_in_a_symlink_loop_is_refused(tmp_path, name, below):
    looped = f"{loop(tmp_path)}{below}"
    with pytest.raises(ParameterError) as err:
        preflight.check(distill(tmp_path, **{name: looped}))
    assert str(err.value) == (f"parameter {name!r}: {looped} cannot be created: {tmp_path / 'a'} is a symlink loop; "
                              "remove the link or give another path")


def test_output_folder_behind_a_broken_symlink_is_refused(tmp_path):
    (tmp_path / "runs").symlink_to(tmp_path / "unmounted-drive" / "runs")  # e.g. a Drive folder not mounted
    with pytest.raises(ParameterError) as err:
        preflight.check(distill(tmp_path, run_dir=str(tmp_path / "runs" / "smoke")))
    assert str(err.value) == (f"parameter 'run_dir': {tmp_path / 'runs' / 'smoke'} cannot be created: "
                              f"{tmp_path / 'runs'} is a broken symlink to {tmp_path / 'unmounted-drive' / 'runs'}; "
                              "remove the link or give another path")


def test_corpus_and_model_paths_in_a_symlink_loop_are_refused(tmp_path):
    looped = loop(tmp_path)
    with pytest.raises(ParameterError) as err:
        distill(tmp_path, corpus=[{"path": str(looped)}])
    assert str(err.value) == (f"parameter 'corpus': text file {looped} is a symlink loop; remove the link or give "
                              "another path")
    with pytest.raises(ParameterError) as err:
        distill(tmp_path, corpus=[{"path": str(looped / "corpus.txt")}])
    assert str(err.value) == (f"parameter 'corpus': text file {looped / 'corpus.txt'}: {looped} is a symlink loop; "
                              "remove the link or give another path")
    with pytest.raises(ParameterError) as err:
        preflight.check(distill(tmp_path, teacher=str(looped)))
    assert str(err.value) == f"parameter 'teacher': {looped} is a symlink loop; remove the link or give another path"


def test_corpus_path_that_is_a_folder_is_named_as_such(tmp_path):
    with pytest.raises(ParameterError) as err:
        distill(tmp_path, corpus=[{"path": str(tmp_path)}])
    assert str(err.value) == f"parameter 'corpus': text file {tmp_path} is a folder, not a file"


# 5. parameter files YAML cannot read, or that are not a mapping

@pytest.mark.parametrize("text, expected", [
    ("max_steps: 3\nadam_betas: [0.9,\n", "line 3, column 1: expected the node content, but found '<stream end>'"),
    ('run_name: "student\n', "line 2, column 1: found unexpected end of stream (while scanning a quoted scalar at "
                              "line 1, column 11)"),
    ("max_steps: 3\n  batch_size: 4\n", "line 2, column 13: mapping values are not allowed here"),
    ("- max_steps: 3\n", "expected a mapping of parameter names to values, got a list"),
])
def test_unreadable_parameter_file_names_the_file_and_the_place(tmp_path, monkeypatch, text, expected):
    monkeypatch.setattr(config, "PARAMS_DIR", tmp_path)
    (tmp_path / "mine").mkdir()
    path = tmp_path / "mine" / "02_distill.yaml"
    path.write_text(text)
    with pytest.raises(ParameterError) as err:
        config.load_params("distill", profile="mine")
    assert str(err.value) == f"parameter 'profile': {path}: {expected}"


def test_override_that_is_not_yaml_names_the_parameter(capsys):
    assert pipeline.main(["--stages", "distill", "-p", "adam_betas=[0.9,"]) == 1
    assert ("ERROR: parameter 'adam_betas': -p adam_betas=[0.9,: line 1, column 6: expected the node content, but "
            "found '<stream end>'\n") in capsys.readouterr().err


# 6. one message, whichever entry point runs the preflight

def test_preflight_runs_standalone_with_the_pipeline_s_message(tmp_path, capsys):
    teacher = model_folder(tmp_path / "teacher", "config.json", *TOKENIZER)
    params = distill(tmp_path, teacher=str(teacher))
    with pytest.raises(ParameterError) as err:
        preflight.check(params)  # params alone: no output_dir, nothing pending
    code = pipeline.main(["--stages", "distill", "-p", f"teacher={teacher}",
                          *sum((["-p", f"{k}={v}"] for k, v in folders(tmp_path).items()), [])])
    assert code == 1 and f"ERROR: {err.value}\n" in capsys.readouterr().err
