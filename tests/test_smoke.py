"""The synthetic smoke world: deterministic, GLUE-shaped and learnable by construction."""
import random

import pytest

from lib import smoke, tasks


def test_generation_is_deterministic():
    assert smoke.corpus_text(random.Random(3), 5) == smoke.corpus_text(random.Random(3), 5)
    assert smoke.corpus_text(random.Random(3), 5) != smoke.corpus_text(random.Random(4), 5)


@pytest.mark.parametrize("task", [t for t in tasks.BUILTIN if tasks.TASKS[t].head != tasks.QA])
def test_rows_have_the_tasks_columns_and_valid_labels(task):
    spec = tasks.TASKS[task]  # each task's own generator (lib.tasks: Task.smoke.row)
    rng = random.Random(0)
    rows = [spec.smoke.row(rng, i) for i in range(200)]
    for row in rows:
        assert set(row) == set(spec.text) | {"label"}
    values = {row["label"] for row in rows}
    if spec.regression:
        assert all(0 <= v <= 5 for v in values) and len(values) > 2
    else:
        assert values == set(range(spec.num_labels))  # every class occurs


def test_smoke_splits_follow_the_spec(tmp_path):
    root = tmp_path / "hub"
    smoke.build_datasets(root)
    for task in tasks.TASKS.values():
        folder = root / task.smoke.dataset / (task.config or "")
        assert sorted(p.name.split("-")[0] for p in folder.glob("*.parquet")) == sorted(task.smoke.sizes)
    card = (root / "smoke/glue/README.md").read_text()
    assert all(f"config_name: {name}" in card for name in tasks.BUILTIN[:9])


def test_sst2_label_follows_the_adjective():
    rng = random.Random(0)
    for _ in range(100):
        row = smoke.sst2_row(rng)
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
