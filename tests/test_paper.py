"""lib.paper's model labels against the profiles: the book matches results to the paper's rows by label, so a label
renamed in a YAML file (or in lib.paper) must fail here rather than silently drop a row from the book."""
import pytest
import yaml

from lib import REPO_ROOT, paper

PROFILES = sorted(p for p in (REPO_ROOT / "params").iterdir() if p.is_dir())


def models_of(profile, stage_file):
    path = profile / stage_file
    assert path.is_file(), f"{path} is missing"
    return yaml.safe_load(path.read_text())["models"]


def test_the_profiles_exist():
    assert {p.name for p in PROFILES} >= {"smoke", "cpu", "t4", "paper"}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_latency_labels_are_the_named_constants(profile):
    labels = set(models_of(profile, "05_latency.yaml"))
    unknown = labels - set(paper.MODEL_LABELS)
    assert not unknown, (f"{profile.name}/05_latency.yaml: model labels {sorted(unknown)} are not among "
                         f"lib.paper.MODEL_LABELS {paper.MODEL_LABELS}")
    assert labels & {paper.STUDENT, paper.DISTILBERT}, "nothing to compare with the paper's DistilBERT"


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@pytest.mark.parametrize("stage_file", ["03_glue.yaml", "04_imdb_squad.yaml"])
def test_downstream_stages_name_teacher_and_student(profile, stage_file):
    labels = set(models_of(profile, stage_file))
    assert {paper.TEACHER, paper.STUDENT} <= labels, f"{profile.name}/{stage_file}: {sorted(labels)}"


def test_paper_labels_are_the_keys_of_its_tables():
    assert set(paper.TABLE3) == {paper.ELMO, paper.BERT_BASE, paper.DISTILBERT} == set(paper.TABLE1)
    assert {paper.BERT_BASE, paper.DISTILBERT} <= set(paper.TABLE2)
    assert paper.TABLE3[paper.DISTILBERT]["seconds"] < paper.TABLE3[paper.BERT_BASE]["seconds"]


def test_a_renamed_label_is_caught(tmp_path):
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "05_latency.yaml").write_text('models:\n  bert-base: google-bert/bert-base-uncased\n'
                                             '  student: "{run_dir}/student"\n')
    with pytest.raises(AssertionError, match="bert-base"):
        test_latency_labels_are_the_named_constants(renamed)
