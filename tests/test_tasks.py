"""A new task is one spec: a toy sentence task registered here, in this file only, fine-tunes on the smoke profile
and gets a results file with its metric (lib.tasks, lib.smoke, lib.finetune, lib.metrics derive the rest)."""
import json

import pytest
from test_training import one_thread  # noqa: F401 (fixture)

from lib import config, finetune, smoke, tasks

TOY = "toy"


def toy_row(rng, i):
    """A learnable toy: label 1 iff the sentence is about a colour word, drawn from the smoke world's words."""
    label = rng.randint(0, 1)
    noun = rng.choice(smoke.NOUNS)
    word = rng.choice(smoke.COLORS) if label else rng.choice(smoke.ADVERBS)
    return {"sentence": f"the {noun} of {rng.choice(smoke.NAMES)} is {word} .", "label": label}


TOY_TASK = tasks.Task(
    name=TOY, dataset="smoke/toy", text=("sentence",), label_names=("other", "colour"), label="Toy",
    metric=tasks.Metric(module="evaluate-metric/glue", config="mrpc",  # accuracy and F1 of the positive class
                        outputs={"accuracy": "accuracy", "f1": "f1"}, score=("accuracy", "f1")),
    smoke=tasks.Smoke(dataset="smoke/toy", row=toy_row, sizes={"train": 96, "validation": 32}))


@pytest.fixture
def toy():
    tasks.register(TOY_TASK)
    yield TOY
    tasks.unregister(TOY)




def test_a_registered_task_fine_tunes_on_the_smoke_profile(toy, tmp_path, monkeypatch):
    monkeypatch.delenv("DISTILBERT_MIRROR", raising=False)
    params = config.make_params(config.GlueParams, dict(
        tasks=[toy], models={"teacher": "smoke/tiny-bert"}, seeds=[1], learning_rate=1e-3, n_epoch=2, batch_size=16,
        max_length=32, precision="fp32", run_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results")))
    runs = finetune.run_sweep(params.models, params.tasks, params.seeds, params, tmp_path / "results" / "glue",
                              provenance={})
    saved = json.loads((tmp_path / "results" / "glue" / "teacher" / "toy-seed1.json").read_text())
    assert saved["task"] == toy and set(saved["metrics"]) == {"accuracy", "f1", "score"}
    assert saved["metrics"]["score"] == pytest.approx((saved["metrics"]["accuracy"] + saved["metrics"]["f1"]) / 2)
    assert saved["predictions"]["validation"]["n"] == 32 and saved["run_key"]["dataset"] == "smoke/toy"
    summary = finetune.summarize(runs)
    assert set(summary.task) == {toy}  # not a GLUE task: no GLUE score row
    assert list(finetune.score_table(summary).columns) == [toy]


def test_the_toy_stand_in_is_generated_under_its_own_id_and_refreshed_when_its_rows_change(toy, tmp_path):
    root = tmp_path / "hub"
    (root / f"COMPLETE-v{smoke.VERSION}").parent.mkdir(parents=True)
    (root / f"COMPLETE-v{smoke.VERSION}").write_text("this test needs no built-in data\n")
    smoke.ensure_hub(root, "smoke/toy")
    first = sorted(p.name for p in (root / "smoke/toy").iterdir())
    assert "train-00000-of-00001.parquet" in first and any(name.startswith("ROWS-") for name in first)
    smoke.ensure_hub(root, "smoke/toy")  # unchanged rows: left as they are
    assert sorted(p.name for p in (root / "smoke/toy").iterdir()) == first
    tasks.TASKS[TOY] = tasks.Task(**{**TOY_TASK.__dict__, "smoke": tasks.Smoke(
        dataset="smoke/toy", row=toy_row, sizes={"train": 50, "validation": 32})})
    smoke.ensure_hub(root, "smoke/toy")
    assert sorted(p.name for p in (root / "smoke/toy").iterdir()) != first


def test_a_registered_task_is_a_stage_task_and_built_ins_stay_put(toy):
    assert toy in config._stage_tasks(config.GlueParams) and toy in finetune.column_order()
    assert tasks.SQUAD not in config._stage_tasks(config.GlueParams)  # QA: stage 4's
    with pytest.raises(config.ParameterError, match="'nope' is not one of"):
        config.make_params(config.GlueParams, dict(tasks=["nope"], models={"m": "x"}))
    with pytest.raises(ValueError, match="built in"):
        tasks.register(tasks.TASKS[tasks.COLA])
