import datasets
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from lib import hub


@pytest.fixture
def mirror(tmp_path):
    """A temporary mirror holding one dataset and one model under hub-style ids."""
    root = tmp_path / "mirror"
    (root / "acme/tiny-data").mkdir(parents=True)
    datasets.Dataset.from_dict({"text": ["a b", "c d e"], "label": [0, 1]}).to_parquet(
        str(root / "acme/tiny-data/train-00000-of-00001.parquet"))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=16))
    model.save_pretrained(root / "acme/tiny-bert")
    return root, model


def test_ids_resolve_against_the_mirror_parameter(mirror):
    root, model = mirror
    assert hub.resolve("acme/tiny-bert", mirror=str(root)) == str(root / "acme/tiny-bert")
    loaded = hub.from_pretrained(AutoModel, "acme/tiny-bert", mirror=str(root))
    assert torch.equal(loaded.embeddings.word_embeddings.weight, model.embeddings.word_embeddings.weight)
    data = hub.load_dataset("acme/tiny-data", mirror=str(root), split="train")
    assert data["text"] == ["a b", "c d e"]


def test_environment_variable_names_the_mirror(mirror, monkeypatch):
    root, _ = mirror
    monkeypatch.setenv(hub.MIRROR_ENV, str(root))
    assert hub.resolve("acme/tiny-bert") == str(root / "acme/tiny-bert")
    assert hub.load_dataset("acme/tiny-data", split="train").num_rows == 2


def test_an_id_missing_everywhere_says_what_was_tried(mirror):
    root, _ = mirror
    with pytest.raises(hub.HubUnavailableError) as err:
        hub.from_pretrained(AutoModel, "acme/not-there", mirror=str(root))
    message = str(err.value)
    assert str(root / "acme/not-there") in message and "hub: acme/not-there" in message
    assert hub.MIRROR_ENV in message and "'mirror' parameter" in message
    with pytest.raises(hub.HubUnavailableError, match="acme/no-data"):
        hub.load_dataset("acme/no-data", mirror=str(root))


def test_a_config_missing_from_the_mirror_names_the_id_the_config_and_the_path(mirror):
    root, _ = mirror
    glue = root / "acme/glue"
    for config in ("cola", "rte"):
        (glue / config).mkdir(parents=True)
        datasets.Dataset.from_dict({"sentence": ["a b"], "label": [0]}).to_parquet(
            str(glue / config / "validation-00000-of-00001.parquet"))
    (glue / "README.md").write_text("---\nconfigs:\n" + "".join(
        f"- config_name: {c}\n  data_files:\n  - split: validation\n    path: {c}/validation-00000-of-00001.parquet\n"
        for c in ("cola", "rte")) + "---\n")
    assert hub.load_dataset("acme/glue", "rte", mirror=str(root))["validation"].num_rows == 1
    with pytest.raises(hub.ConfigNotFoundError) as err:
        hub.load_dataset("acme/glue", "mnli", mirror=str(root))
    assert str(err.value) == (f"dataset 'acme/glue' has no config 'mnli': tried the copy at {glue}, whose configs "
                              "are: cola, rte. Add 'mnli' to that copy, or do not ask for it.")


def test_rewritten_data_files_are_read_again_not_served_from_a_stale_cache(tmp_path):
    # laid out like the mirror's GLUE: a README names each config's files (datasets then caches by name only)
    data = tmp_path / "mirror/acme/configs"
    (data / "rte").mkdir(parents=True)
    (data / "README.md").write_text("---\nconfigs:\n- config_name: rte\n  data_files:\n  - split: train\n"
                                    "    path: rte/train-00000-of-00001.parquet\n---\n")
    for texts in (["a b", "c d e"], ["a b", "changed"]):
        datasets.Dataset.from_dict({"text": texts, "label": [0, 1]}).to_parquet(
            str(data / "rte/train-00000-of-00001.parquet"))
        assert hub.load_dataset("acme/configs", "rte", mirror=str(tmp_path / "mirror"), split="train")["text"] == texts


def test_a_missing_mirror_directory_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="parameter 'mirror'"):
        hub.resolve("acme/x", mirror=str(tmp_path / "nope"))


def test_local_paths_win(tmp_path, mirror):
    root, _ = mirror
    assert hub.resolve(str(root / "acme/tiny-bert")) == str(root / "acme/tiny-bert")


def test_smoke_ids_are_generated_offline():
    tokenizer = hub.from_pretrained(AutoTokenizer, "smoke/tiny-bert")
    ids = tokenizer("alice likes the lovely cat .")["input_ids"]
    assert tokenizer.unk_token_id not in ids  # the WordPiece vocabulary was trained on the smoke language
    cola = hub.load_dataset("smoke/glue", "cola")
    assert cola["train"].features["label"].names == ["unacceptable", "acceptable"]


@pytest.mark.mirror
def test_real_mirror_ids_load(shared_hub):
    cola = hub.load_dataset("nyu-mll/glue", "cola", mirror=str(shared_hub), split="validation")
    assert cola.num_rows == 1043
    tokenizer = hub.from_pretrained(AutoTokenizer, "google-bert/bert-base-uncased", mirror=str(shared_hub))
    assert tokenizer.vocab_size == 30522
