"""lib.training: precision choice, the distillation loop and its pieces (masking spec, log window, step; logs,
checkpoints, resume, NaN stop, 2-process DDP), the memory estimate; lib.distill's runs. Tiny models, CPU, one
thread."""
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM, BertTokenizer,
                          DistilBertConfig)

from lib import REPO_ROOT, checkpoints, config, data, distill, losses, models, results, training
from lib.config import DistillParams, ParameterError, load_params, make_params

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(autouse=True)
def one_thread():
    # two shared cores: more threads only spin against each other on these tiny matrices
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_setup(seed=0):
    """A random 4-layer BERT teacher, its tokenizer and ~100 tokenized sequences of a Zipf-distributed corpus."""
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(SPECIALS + [f"w{i}" for i in range(120)])})
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    teacher = BertForMaskedLM(config).eval()
    rng = np.random.default_rng(seed)
    docs = [" ".join(f"w{n}" for n in rng.zipf(1.3, size=rng.integers(8, 40)).clip(max=119)) for _ in range(80)]
    dataset = data.tokenize_corpus(docs, tokenizer, max_length=32, min_length=6)
    return teacher, tokenizer, dataset


def distill_params(**overrides):
    values = dict(corpus=[{"id": "synthetic"}], max_length=32, min_length=6, batch_size=4, gradient_accumulation_steps=2,
                  max_steps=6, checkpoint_every=2, log_every=1, precision="fp32", seed=7)
    values.update(overrides)
    return make_params(DistillParams, values)


@pytest.fixture(scope="module")
def setup():
    return tiny_setup()


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_select_precision(monkeypatch):
    assert training.select_precision("auto", "cpu") == (torch.float32, False)
    assert training.select_precision("bf16", "cpu") == (torch.bfloat16, False)
    with pytest.raises(ParameterError, match="precision"):
        training.select_precision("fp16", "cpu")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # T4
    assert training.select_precision("auto", "cuda") == (torch.float16, True)
    with pytest.raises(ParameterError, match="compute capability"):
        training.select_precision("bf16", "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # A100
    assert training.select_precision("auto", "cuda") == (torch.bfloat16, False)
    assert training.select_precision("fp16", "cuda") == (torch.float16, True)
    assert training.select_precision("fp32", "cuda") == (torch.float32, False)


def test_distill_logs_and_saves(setup, tmp_path):
    teacher, tokenizer, dataset = setup
    teacher_before = state(teacher)
    student = models.build_student(teacher)
    student_before = state(student)
    summary = training.distill(teacher, student, dataset, distill_params(), tmp_path, tokenizer, progress=False)
    log = training.read_log(summary["log_path"])
    assert summary["log"] == log and [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    # 5% warmup of 6 steps = 1 step (lr 0), then linear decay from 5e-4
    assert [r["lr"] for r in log] == pytest.approx([0, 5e-4, 4e-4, 3e-4, 2e-4, 1e-4])
    for r in log:
        assert {"loss", "loss_ce", "loss_mlm", "loss_cos", "tokens_per_s", "padding_share", "grad_norm"} <= set(r)
        assert "loss_mse" not in r and 0 <= r["padding_share"] < 1
        assert r["loss"] == pytest.approx(5 * r["loss_ce"] + 2 * r["loss_mlm"] + r["loss_cos"], rel=1e-5)
    # tokens: the non-padding tokens of the first 12 micro-batches of the epoch-0 order (seed 7)
    lengths = data.sequence_lengths(dataset)
    batches = data.length_grouped_batches(lengths, 4, seed=7)[:12]
    assert summary["tokens"] == log[-1]["tokens"] == sum(lengths[b].sum() for b in batches)
    assert summary["steps"] == 6 and summary["final"]["loss"] == log[-1]["loss"]
    # the student learned, the teacher did not
    assert any(not torch.equal(student_before[k], v) for k, v in student.state_dict().items())
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    assert summary["output_dir"] == str(tmp_path)  # the run directory is the model directory
    reloaded = AutoModelForMaskedLM.from_pretrained(summary["output_dir"])
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in student.state_dict().items())
    assert AutoTokenizer.from_pretrained(summary["output_dir"]).mask_token_id == tokenizer.mask_token_id


def test_run_distillation_writes_the_run_with_its_own_parameters(setup, tmp_path):
    teacher, tokenizer, dataset = setup
    params = distill_params(run_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"), max_steps=2,
                            n_student_layers=2, ablations={"no-cos": {"alpha_cos": 0.0}})
    counts = data.token_counts(dataset, teacher.config.vocab_size, progress=False)
    summary = distill.run_distillation(params.variant("no-cos"), teacher, dataset, tokenizer, counts)
    record = json.loads((tmp_path / "results" / "distill-no-cos.json").read_text())
    assert record["provenance"]["params"]["alpha_cos"] == 0 and record["provenance"]["params"]["run_name"] == "no-cos"
    assert record["student_layers"] == [0, 3] and record["steps"] == 2 == summary["steps"]
    assert record["student_parameters"] < record["teacher_parameters"]
    assert summary["output_dir"] == str(tmp_path / "runs" / "no-cos")
    assert [r["step"] for r in record["loss_curve"]] == [1, 2] and record["loss_curve"][-1]["loss"] == summary["final"]["loss"]
    assert "loss_cos" not in summary["final"] and summary["final"]["loss"] == pytest.approx(
        5 * summary["final"]["loss_ce"] + 2 * summary["final"]["loss_mlm"], rel=1e-5)


def test_a_finished_run_run_again_keeps_its_record_s_wall_time(setup, tmp_path):
    teacher, tokenizer, dataset = setup
    params = distill_params(run_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"), max_steps=2)
    path = tmp_path / "results" / f"distill-{params.run_name}.json"
    distill.run_distillation(params, teacher, dataset, tokenizer)
    first = json.loads(path.read_text())
    first["wall_time_s"] = 1234.5  # as if it had trained for 20 minutes
    path.write_text(json.dumps(first))
    again = distill.run_distillation(params, teacher, dataset, tokenizer)  # resumes at its last step: trains nothing
    record = json.loads(path.read_text())
    assert again["resumed_from"] == 2 and record["weights_sha1"] == first["weights_sha1"]
    assert record["wall_time_s"] == 1234.5  # not the seconds of a call that only reloaded it


def test_a_resumed_run_s_wall_time_counts_its_earlier_segments(setup, tmp_path, monkeypatch):
    teacher, tokenizer, dataset = setup
    params = distill_params(run_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"), max_steps=4)

    def interrupt(record):
        if record["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # the first segment: two steps, then a checkpoint
        training.distill(teacher, models.build_student(teacher), dataset, params, tmp_path / "runs" / params.run_name,
                         tokenizer, progress=False, on_log=interrupt)
    load_state = training.load_state
    monkeypatch.setattr(training, "load_state", lambda slot: {**load_state(slot), "elapsed_s": 1000.0})  # 17 minutes
    summary = distill.run_distillation(params, teacher, dataset, tokenizer)
    record = json.loads((tmp_path / "results" / f"distill-{params.run_name}.json").read_text())
    assert summary["resumed_from"] == 2 and summary["earlier_wall_time_s"] == 1000.0
    assert 1000.0 < record["wall_time_s"] < 1060.0  # both segments, not the second's seconds alone


def test_interrupted_run_resumes_to_the_same_weights(setup, tmp_path):
    teacher, tokenizer, dataset = setup
    params = distill_params(max_steps=16, checkpoint_every=100)  # 12 steps per epoch: the resume crosses into epoch 1
    reference = models.build_student(teacher)
    training.distill(teacher, reference, dataset, params, tmp_path / "reference", tokenizer, progress=False)
    reference_log = training.read_log(tmp_path / "reference" / "log.jsonl")

    def interrupt(record):
        if record["step"] == 13:
            raise KeyboardInterrupt

    student = models.build_student(teacher)
    with pytest.raises(KeyboardInterrupt):
        training.distill(teacher, student, dataset, params, tmp_path / "run", tokenizer, progress=False, on_log=interrupt)
    saved = checkpoints.load_state(checkpoints.find_checkpoint(tmp_path / "run"))
    assert saved["step"] == 13

    resumed = models.build_student(teacher)  # fresh weights: everything must come from the checkpoint
    summary = training.distill(teacher, resumed, dataset, params, tmp_path / "run", tokenizer, progress=False)
    assert summary["resumed_from"] == 13 and summary["steps"] == 16
    for k, v in reference.state_dict().items():
        assert torch.allclose(resumed.state_dict()[k], v, atol=1e-6), k
    log = training.read_log(summary["log_path"])
    assert [r["step"] for r in log] == list(range(1, 17))
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in reference_log], rel=1e-5)
    assert log[-1]["tokens"] == reference_log[-1]["tokens"]

    with pytest.raises(ParameterError, match="resume"):  # same run_dir, other batch order
        training.distill(teacher, models.build_student(teacher), dataset, distill_params(max_steps=16, batch_size=2),
                         tmp_path / "run", tokenizer, progress=False)
    assert not (tmp_path / "run" / "run.lock").exists()  # released, also after an error


def test_nan_loss_stops_and_keeps_last_checkpoint(setup, tmp_path, monkeypatch):
    teacher, tokenizer, dataset = setup
    calls = []

    def poisoned(*args, **kwargs):
        losses = training_loss(*args, **kwargs)
        calls.append(1)
        if len(calls) > 6:  # from optimizer step 4 on (2 micro-batches per step)
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    training_loss = training.distillation_loss
    monkeypatch.setattr(training, "distillation_loss", poisoned)
    student = models.build_student(teacher)
    with pytest.raises(FloatingPointError, match=r"step 4 .*checkpoint.*\(step 2\)"):
        training.distill(teacher, student, dataset, distill_params(checkpoint_every=2), tmp_path, tokenizer, progress=False)
    slot = checkpoints.find_checkpoint(tmp_path)
    assert checkpoints.load_state(slot)["step"] == 2
    kept = AutoModelForMaskedLM.from_pretrained(slot / "student")
    assert all(torch.isfinite(p).all() for p in kept.parameters())
    assert all(torch.isfinite(p).all() for p in student.parameters())  # the NaN step was not applied


def test_ddp_two_processes_end_identical(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(f"""
        import json, os, sys
        import torch
        torch.set_num_threads(1)
        sys.path[:0] = [{str(REPO_ROOT)!r}, {str(Path(__file__).parent)!r}]
        from test_training import tiny_setup, distill_params
        from lib import models, training
        teacher, tokenizer, dataset = tiny_setup()
        student = models.build_student(teacher)
        summary = training.distill(teacher, student, dataset, distill_params(max_steps=3, batch_size=2), sys.argv[1],
                                   tokenizer, progress=False, device="cpu")
        rank = int(os.environ["RANK"])
        torch.save(student.state_dict(), os.path.join(sys.argv[1], f"rank{{rank}}.pt"))
        json.dump(summary, open(os.path.join(sys.argv[1], f"summary{{rank}}.json"), "w"))
        torch.distributed.destroy_process_group()
    """))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(worker), str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / "run" / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    summary = json.loads((tmp_path / "run" / "summary0.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    # each optimizer step saw 2 processes x 2 micro-batches x 2 sequences: different data on the two ranks
    initial = models.build_student(tiny_setup()[0]).state_dict()
    assert any(not torch.equal(initial[k], rank0[k]) for k in rank0)


def test_estimate_memory_counts_parameters(setup):
    teacher = setup[0]
    student = models.build_student(teacher)
    small = training.estimate_memory(teacher.config, student.config, batch_size=4, seq_length=32)
    assert small["teacher_parameters"] == models.count_parameters(teacher)
    assert small["student_parameters"] == models.count_parameters(student)
    base = BertConfig()  # BERT-base and the 6-layer DistilBERT: the published sizes
    distil = DistilBertConfig()
    one = training.estimate_memory(base, distil, batch_size=5, seq_length=512)
    assert one["teacher_parameters"] == 109_514_298 and one["student_parameters"] == 66_985_530
    assert one["fits"] and 3 < one["total_gib"] < 8  # the authors' 5 x 512 per 16 GB V100
    two = training.estimate_memory(base, distil, batch_size=10, seq_length=512)
    fixed = sum(one["parts"][k] for k in ("teacher weights", "student weights", "student gradients", "AdamW moments",
                                          "autocast weight copies"))
    assert two["total_gib"] - fixed == pytest.approx(2 * (one["total_gib"] - fixed))
    assert not training.estimate_memory(base, distil, batch_size=64, seq_length=512)["fits"]
    # fp32: the fused head's three float32 buffers of FUSED_CHUNK_ROWS rows, whatever the batch
    for batch_size in (5, 10):
        fp32 = training.estimate_memory(base, distil, batch_size=batch_size, seq_length=512, precision="fp32")
        assert fp32["parts"]["logits and loss"] * 2 ** 30 == 3 * losses.FUSED_CHUNK_ROWS * distil.vocab_size * 4


def test_resume_with_a_changed_learning_rate_is_refused_unless_allowed(setup, tmp_path, capsys):
    teacher, tokenizer, dataset = setup
    params = distill_params(max_steps=6, checkpoint_every=3)

    def stop_at_3(record):
        if record["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.distill(teacher, models.build_student(teacher), dataset, params, tmp_path, tokenizer, progress=False,
                         on_log=stop_at_3)
    with pytest.raises(ParameterError) as err:
        training.distill(teacher, models.build_student(teacher), dataset, distill_params(learning_rate=1e-3),
                         tmp_path, tokenizer, progress=False)
    assert err.value.name == "learning_rate"
    assert "learning_rate=0.0005, now 0.001" in str(err.value) and "resume_with_changes=true" in str(err.value)
    with pytest.raises(ParameterError) as err:  # the data order cannot change, even when changes are allowed
        training.distill(teacher, models.build_student(teacher), dataset,
                         distill_params(seed=8, resume_with_changes=True), tmp_path, tokenizer, progress=False)
    assert err.value.name in ("resume", "seed")

    changed = distill_params(learning_rate=1e-3, alpha_ce=1.0, resume_with_changes=True)
    summary = training.distill(teacher, models.build_student(teacher), dataset, changed, tmp_path, tokenizer,
                               progress=False)
    assert summary["resumed_from"] == 3 and summary["steps"] == 6
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resuming from step 3 of ")]
    assert len(said) == 1 and "alpha_ce: 5.0 -> 1.0, learning_rate: 0.0005 -> 0.001" in said[0]  # once, all changes
    assert summary["segments"][0]["start_step"] == 0 and summary["segments"][0]["params"]["learning_rate"] == 5e-4
    assert summary["segments"][1] == {"start_step": 3, "params": {"learning_rate": 1e-3, "alpha_ce": 1.0}}
    # steps 1-3 ran the old schedule (1 warmup step, then linear decay from 5e-4); steps 4-6 the new one, at its
    # own position: what a whole run at 1e-3 would use at steps 4-6
    assert [r["lr"] for r in summary["log"]] == pytest.approx([0, 5e-4, 4e-4, 6e-4, 4e-4, 2e-4])
    last = summary["log"][-1]  # the new loss weights hold from the resume on: alpha_ce 1
    assert last["loss"] == pytest.approx(last["loss_ce"] + 2 * last["loss_mlm"] + last["loss_cos"], rel=1e-5)


def test_nan_advice_followed_literally_finishes_the_run(setup, tmp_path):
    import re
    teacher, tokenizer, dataset = setup
    # 1e8: step 2 (the first after the warmup step) blows the weights up, step 3's loss is NaN
    values = dict(learning_rate=1e8, max_steps=5, checkpoint_every=1)
    for attempt in range(10):
        try:
            summary = training.distill(teacher, models.build_student(teacher), dataset, distill_params(**values),
                                       tmp_path, tokenizer, progress=False)
            break
        except FloatingPointError as err:
            advice = re.search(r"run again with learning_rate=(\S+), resume_with_changes=true and resume=true", str(err))
            assert advice, str(err)
            assert attempt > 0 or "checkpoint-a (step 1)" in str(err)  # step 2's checkpoint was set aside
            values.update(learning_rate=float(advice.group(1)), resume_with_changes=True, resume=True)
    else:
        pytest.fail("the advice never led to a finished run")
    assert summary["steps"] == 5 and summary["resumed_from"] == 1 and math.isfinite(summary["final"]["loss"])
    assert [s["start_step"] for s in summary["segments"]] == [0, 1]  # one segment per resume that changed lr
    assert summary["segments"][-1]["params"] == {"learning_rate": values["learning_rate"]}
    assert values["learning_rate"] < 1e8
    assert all(torch.isfinite(p).all() for p in AutoModelForMaskedLM.from_pretrained(tmp_path).parameters())


def test_too_few_sequences_blame_batch_size_not_accumulation(setup, tmp_path):
    teacher, tokenizer, dataset = setup
    n = len(dataset)
    with pytest.raises(ParameterError) as err:
        training.distill(teacher, models.build_student(teacher), dataset,
                         distill_params(batch_size=n + 1, gradient_accumulation_steps=1), tmp_path, tokenizer,
                         progress=False)
    assert err.value.name == "batch_size" and f"the corpus has {n} sequences" in str(err.value)
    with pytest.raises(ParameterError) as err:
        training.distill(teacher, models.build_student(teacher), dataset,
                         distill_params(batch_size=4, gradient_accumulation_steps=n), tmp_path, tokenizer, progress=False)
    assert err.value.name == "gradient_accumulation_steps"


def test_trajectory_params_keep_run_dir_paths_relative_so_a_moved_run_resumes():
    moved = {}
    for run_dir in ("runs/t4", "/content/drive/MyDrive/distilbert-reproduced/runs/t4"):
        params = make_params(DistillParams, dict(run_dir=run_dir, teacher="{run_dir}/teacher",
                                                 corpus=[{"id": "smoke/corpus", "split": "train", "column": "text"}]))
        assert params.teacher == f"{run_dir}/teacher"
        moved[run_dir] = training.trajectory_params(params)
    assert moved["runs/t4"] == moved["/content/drive/MyDrive/distilbert-reproduced/runs/t4"]
    assert moved["runs/t4"]["teacher"] == "{run_dir}/teacher"
    # a teacher outside run_dir is compared as given: a different one is a different trajectory
    other = make_params(DistillParams, dict(run_dir="runs/t4-other", teacher="runs/t4/teacher",
                                            corpus=[{"id": "smoke/corpus", "split": "train", "column": "text"}]))
    assert training.trajectory_params(other)["teacher"] == "runs/t4/teacher"


def test_masking_spec_masks_as_mask_tokens_with_the_run_parameters(setup):
    teacher, tokenizer, dataset = setup
    params = distill_params(mlm_mask_prop=0.3, word_mask=0.5, word_keep=0.2, word_rand=0.3)
    probs = data.mlm_token_probs(np.ones(len(tokenizer)), 0.0, data.special_token_ids(tokenizer))
    spec = training.masking_spec(params, tokenizer, probs)
    assert (spec.mask_token_id, spec.mlm_mask_prop, spec.word_mask, spec.word_keep, spec.word_rand) == (
        tokenizer.mask_token_id, 0.3, 0.5, 0.2, 0.3)
    batch = data.collate([dataset[i] for i in range(4)], tokenizer.pad_token_id)
    got = spec.apply(batch, torch.Generator().manual_seed(3))
    want = data.mask_tokens(batch["input_ids"], batch["attention_mask"], probs, tokenizer.mask_token_id,
                            data.special_token_ids(tokenizer), 0.3, 0.5, 0.2, 0.3, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_log_record_averages_the_window_by_name():
    class OneProcess:
        num_processes = 1
    window = training.LogWindow.empty("cpu", now=10.0)
    window.losses += torch.tensor([8.0, 1.0, 2.0, 0.5, 0.0])  # two steps' sums of loss, ce, mlm, cos, mse
    window.tokens += 300
    window.positions += 400
    window.grad_norm += 3.0
    window.steps = 2
    weights = dict(alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=0.0, alpha_mse=0.0)
    record, tokens = training.log_record(window, OneProcess(), weights, step=6, epoch=0.5, lr=1e-3, tokens_seen=100,
                                         elapsed_s=1.5, now=12.0)
    assert tokens == 400 and record["tokens"] == 400
    assert record == dict(step=6, epoch=0.5, lr=1e-3, loss=4.0, loss_ce=0.5, loss_mlm=1.0, grad_norm=1.5,
                          tokens=400, tokens_per_s=150.0, padding_share=0.25, elapsed_s=1.5)  # cos, mse: weight 0


def test_plan_steps_names_the_knob_that_made_a_step_too_big():
    plan = training.plan_steps(distill_params(max_steps=None, n_epoch=2, warmup_prop=0.1), n_sequences=100, world=1)
    assert plan == training.StepPlan(micro_per_epoch=25, accum=2, steps_per_epoch=12, total_steps=24, warmup_steps=3)
    with pytest.raises(ParameterError, match="gradient_accumulation_steps.*100 sequences"):
        training.plan_steps(distill_params(gradient_accumulation_steps=30), n_sequences=100, world=1)
    with pytest.raises(ParameterError, match="effective_batch_size"):
        training.plan_steps(distill_params(effective_batch_size=200), n_sequences=100, world=1)


def test_run_stage_builds_the_student_once_and_saves_its_initialisation(tmp_path):
    params = load_params(config.DISTILL, profile="smoke", teacher="smoke/tiny-bert", run_dir=str(tmp_path / "runs"),
                         results_dir=str(tmp_path / "results"), max_steps=2, checkpoint_every=2, log_every=1,
                         undistilled_name="undistilled", ablations={"random": {"random_init": True}})
    stage = distill.run(params, progress=False)
    assert list(stage.runs) == ["student", "random"] and stage.undistilled_dir == tmp_path / "runs" / "undistilled"
    initial = distill.build_student(params, stage.teacher)
    saved = AutoModelForMaskedLM.from_pretrained(stage.undistilled_dir)
    assert training.weights_digest(saved) == training.weights_digest(initial)  # the main student before distillation
    assert stage.runs["student"]["weights_sha1"] == training.weights_digest(stage.student) != training.weights_digest(saved)
    assert json.loads((tmp_path / "results" / "distill-random.json").read_text())["provenance"]["params"]["random_init"]
    # the random-init ablation starts from params.seed, whatever ran before it
    torch.manual_seed(123)
    a = distill.build_student(params.variant("random"), stage.teacher)
    b = distill.build_student(params.variant("random"), stage.teacher)
    assert training.weights_digest(a) == training.weights_digest(b)


def test_heldout_split_is_disjoint_from_training_and_the_same_every_time(setup):
    _, _, dataset = setup
    params = distill_params(heldout_sequences=10)
    train, heldout = distill.split_heldout(dataset, params)
    again = distill.split_heldout(dataset, params)[1]
    rows = lambda d: [tuple(r) for r in d["input_ids"]]  # noqa: E731
    assert len(heldout) == 10 and len(train) == len(dataset) - 10 and rows(again) == rows(heldout)
    assert sorted(rows(train) + rows(heldout)) == sorted(rows(dataset))
    assert not set(rows(train)) & set(rows(heldout)) or len(set(rows(dataset))) < len(dataset)
    assert distill.split_heldout(dataset, distill_params())[1] is None
    with pytest.raises(ParameterError, match="heldout_sequences"):
        distill.split_heldout(dataset, distill_params(heldout_sequences=len(dataset)))


def test_heldout_evaluations_leave_the_trajectory_alone(setup, tmp_path):
    teacher, tokenizer, full = setup
    dataset, heldout = distill.split_heldout(full, distill_params(heldout_sequences=12))
    finals = {}
    for eval_every in (0, 2):
        params = distill_params(heldout_sequences=12, eval_every=eval_every, log_every=3, checkpoint_every=100)
        student = models.build_student(teacher)
        summary = training.distill(teacher, student, dataset, params, tmp_path / f"every{eval_every}", tokenizer,
                                   progress=False, evaluate=distill.heldout_evaluator(params, teacher, heldout, tokenizer))
        finals[eval_every] = (state(student), summary)
    (a, plain), (b, curved) = finals[0], finals[2]
    assert all(torch.equal(a[k], b[k]) for k in a)  # same final weights with and without evaluations
    assert [r["step"] for r in plain["heldout_curve"]] == [6] and [r["step"] for r in curved["heldout_curve"]] == [0, 2, 4, 6]
    assert curved["heldout_curve"][0]["tokens"] == 0 and curved["heldout_curve"][-1]["tokens"] == curved["tokens"]
    # the evaluation steps are logged, so each point knows its tokens
    assert [r["tokens"] for r in curved["heldout_curve"][1:]] == [r["tokens"] for r in curved["log"] if r["step"] in (2, 4, 6)]
    assert {k: v for k, v in plain["heldout_curve"][-1].items() if k != "seconds"} == pytest.approx(
        {k: v for k, v in curved["heldout_curve"][-1].items() if k != "seconds"})


def test_run_stage_measures_every_run_and_the_references_on_the_same_heldout_set(tmp_path):
    params = load_params(config.DISTILL, profile="smoke", teacher="smoke/tiny-bert", run_dir=str(tmp_path / "runs"),
                         results_dir=str(tmp_path / "results"), max_steps=2, checkpoint_every=2, log_every=1,
                         heldout_sequences=8, eval_every=1, undistilled_name="undistilled",
                         ablations={"mlm-only": {"alpha_ce": 0.0, "alpha_cos": 0.0}})
    stage = distill.run(params, progress=False)
    main = results.read(tmp_path / "results" / "distill-student.json")
    mlm_only = results.read(tmp_path / "results" / "distill-mlm-only.json")
    assert len(stage.heldout) == 8 and main.heldout == main.heldout_curve[-1]
    assert [r["step"] for r in main.heldout_curve] == [0, 1, 2] == [r["step"] for r in mlm_only.heldout_curve]
    assert main.heldout["n_tokens"] == mlm_only.heldout["n_tokens"] == main.heldout_reference["teacher"]["n_tokens"]
    assert main.heldout_reference["teacher"]["kl_to_teacher"] == pytest.approx(0.0, abs=1e-6)
    # step 0 of the main run is the undistilled student, measured alike
    assert main.heldout_curve[0]["mlm_accuracy"] == main.heldout_reference["undistilled"]["mlm_accuracy"]
    assert main.heldout_curve[0]["kl_to_teacher"] == pytest.approx(main.heldout_reference["undistilled"]["kl_to_teacher"])
    assert mlm_only.heldout_reference is None and "loss_ce" not in mlm_only.final


def test_adamw_is_the_fused_kernel_and_steps_as_the_plain_one():
    """training.adamw picks torch's fused AdamW on CPU (issue 23: ~4x faster); a few steps with weight decay leave
    the same parameters as the plain for-loop AdamW with the authors' groups."""
    torch.manual_seed(0)
    student = models.build_student(tiny_setup()[0], n_layers=2)
    twin = models.build_student(tiny_setup()[0], n_layers=2)
    twin.load_state_dict(student.state_dict())
    before = state(student)
    fast = training.adamw(student, 1e-2, weight_decay=0.1)
    params = [p for p in twin.parameters() if p.requires_grad]
    plain = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
                               {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                              lr=1e-2, betas=(0.9, 0.98), eps=1e-6, foreach=False, fused=False)
    assert fast.defaults["fused"] is True
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        for p, q in zip(student.parameters(), twin.parameters()):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        fast.step()
        plain.step()
    for (name, p), q in zip(student.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(student.state_dict()["vocab_transform.weight"], before["vocab_transform.weight"])
