"""The synthetic smoke world: deterministic, GLUE-shaped and learnable by construction."""
import random

import pytest

from lib import smoke


def test_generation_is_deterministic():
    assert smoke.corpus_text(random.Random(3), 5) == smoke.corpus_text(random.Random(3), 5)
    assert smoke.corpus_text(random.Random(3), 5) != smoke.corpus_text(random.Random(4), 5)


@pytest.mark.parametrize("task", list(smoke.GLUE_LAYOUT))
def test_rows_have_the_glue_columns_and_valid_labels(task):
    rng = random.Random(0)
    columns, labels, _ = smoke.GLUE_LAYOUT[task]
    rows = [smoke.glue_row(task, rng) for _ in range(200)]
    for row in rows:
        assert set(row) == set(columns) | {"label"}
    values = {row["label"] for row in rows}
    if labels is None:
        assert all(0 <= v <= 5 for v in values) and len(values) > 2
    else:
        assert values == set(range(len(labels)))  # every class occurs


def test_sst2_label_follows_the_adjective():
    rng = random.Random(0)
    for _ in range(100):
        row = smoke.glue_row("sst2", rng)
        words = set(row["sentence"].split())
        assert bool(words & set(smoke.POSITIVE)) == bool(row["label"])


def test_squad_answer_span_points_at_the_answer():
    rng = random.Random(0)
    for i in range(50):
        row = smoke.squad_row(rng, i)
        start, text = row["answers"]["answer_start"][0], row["answers"]["text"][0]
        assert row["context"][start:start + len(text)] == text
        noun_of_name = row["question"].removeprefix("what colour is ").removesuffix(" ?")
        assert f"{noun_of_name} is {text}" in row["context"]


def test_imdb_label_is_the_majority_sentiment():
    rng = random.Random(0)
    for _ in range(50):
        row = smoke.imdb_row(rng)
        words = row["text"].split()
        positive = sum(w in smoke.POSITIVE for w in words)
        negative = sum(w in smoke.NEGATIVE for w in words)
        assert (positive > negative) == bool(row["label"])


def test_an_edited_smoke_dataset_is_read_afresh(tmp_path, monkeypatch):
    # like a mirror's: an edit to the files under the same id must reach the rows and the data fingerprint
    import pyarrow.parquet as pq

    from lib import finetune, hub
    root = tmp_path / "smoke-hub"
    smoke.build_datasets(root)
    (root / f"COMPLETE-v{smoke.VERSION}").write_text("datasets only: this test needs no teacher\n")
    monkeypatch.setattr(hub, "SMOKE_HUB", root)
    before = hub.load_dataset("smoke/glue", "sst2")
    fingerprint = finetune.data_fingerprint(before)
    path = root / "smoke/glue/sst2/train-00000-of-00001.parquet"
    table = pq.read_table(path)
    sentences = table.column("sentence").to_pylist()
    sentences[0] += " again"
    pq.write_table(table.set_column(table.schema.get_field_index("sentence"), "sentence", [sentences]), path)
    assert pq.read_table(path).column("sentence")[0].as_py().endswith(" again")
    after = hub.load_dataset("smoke/glue", "sst2")
    assert after["train"][0]["sentence"] == sentences[0]
    assert finetune.data_fingerprint(after) != fingerprint
