"""lib.models: layer choice, tensor-by-tensor student initialisation, the seeded random init, save/reload."""
import platform
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM, BertModel, BertTokenizer

from lib import REPO_ROOT, models
from lib.teacher import load_teacher

MINILM = Path("/work/shared/data/hub/sentence-transformers/all-MiniLM-L6-v2")


def tiny_tokenizer(n_words=120):
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return BertTokenizer(vocab={t: i for i, t in enumerate(specials + [f"w{i}" for i in range(n_words)])})


def tiny_teacher(n_layers=4, vocab_size=125, seed=0):
    """A random BERT whose every tensor (LayerNorms, biases, token types included) is distinct from any
    default initialisation, so that a copy that silently did not happen shows."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=n_layers, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    teacher = BertForMaskedLM(config)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return teacher.eval()


def batch(vocab_size=125, seed=1):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (3, 12), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:] = 0
    attention_mask[2, 5:] = 0
    input_ids[attention_mask == 0] = 0
    input_ids[:, 0] = 2
    return input_ids, attention_mask


def test_evenly_spread_layers():
    assert models.evenly_spread_layers(12, 6) == [0, 2, 4, 7, 9, 11]  # the authors' choice
    assert models.evenly_spread_layers(6, 3) == [0, 2, 5]
    assert models.evenly_spread_layers(4, 4) == [0, 1, 2, 3]
    assert models.evenly_spread_layers(12, 1) == [0]
    for n_teacher in range(2, 25):
        for n_student in range(2, n_teacher + 1):
            layers = models.evenly_spread_layers(n_teacher, n_student)
            assert layers[0] == 0 and layers[-1] == n_teacher - 1
            assert len(layers) == n_student and all(a < b for a, b in zip(layers, layers[1:]))
    with pytest.raises(ValueError, match="n_student_layers"):
        models.evenly_spread_layers(6, 7)


def test_student_copies_every_tensor():
    teacher = tiny_teacher()
    student = models.build_student(teacher, layers=[0, 2, 3])
    assert student.config.n_layers == 3 and student.config.teacher_layers == [0, 2, 3]
    t = dict(teacher.named_parameters(remove_duplicate=False))
    s = dict(student.named_parameters(remove_duplicate=False))
    pairs = models.student_teacher_names([0, 2, 3])
    for s_name, t_name in pairs:
        assert torch.equal(s[s_name], t[t_name]), (s_name, t_name)
    # independent spot checks, names written out by hand
    assert torch.equal(student.distilbert.transformer.layer[1].attention.q_lin.weight,
                       teacher.bert.encoder.layer[2].attention.self.query.weight)
    assert torch.equal(student.distilbert.transformer.layer[2].ffn.lin2.bias, teacher.bert.encoder.layer[3].output.dense.bias)
    assert torch.equal(student.distilbert.transformer.layer[2].output_layer_norm.weight,
                       teacher.bert.encoder.layer[3].output.LayerNorm.weight)
    assert torch.equal(student.vocab_transform.weight, teacher.cls.predictions.transform.dense.weight)
    assert torch.equal(student.vocab_projector.bias, teacher.cls.predictions.bias)
    assert torch.equal(student.vocab_projector.weight, teacher.bert.embeddings.word_embeddings.weight)
    # token type 0 folded into the positions
    emb = teacher.bert.embeddings
    assert torch.equal(student.distilbert.embeddings.position_embeddings.weight,
                       emb.position_embeddings.weight + emb.token_type_embeddings.weight[0])
    # nothing left out: every student tensor is a copy or the folded position embeddings
    covered = {s_name for s_name, _ in pairs} | {"distilbert.embeddings.position_embeddings.weight", "vocab_projector.weight"}
    assert set(s) == covered
    # teacher minus 1 layer, token types; the head counted once
    per_layer = sum(p.numel() for p in teacher.bert.encoder.layer[0].parameters())
    expected = models.count_parameters(teacher) - per_layer - emb.token_type_embeddings.weight.numel()
    assert models.count_parameters(student) == expected


def test_student_embeddings_and_outputs_match_teacher():
    teacher = tiny_teacher()
    input_ids, attention_mask = batch()
    student = models.build_student(teacher, layers=[0, 3]).eval()
    with torch.no_grad():
        assert torch.allclose(student.distilbert.embeddings(input_ids), teacher.bert.embeddings(input_ids), atol=1e-6)
        s_out = student(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        t_out = teacher(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    real = attention_mask.bool()
    assert torch.allclose(s_out.hidden_states[1][real], t_out.hidden_states[1][real], atol=1e-5)  # both layer 0
    assert not torch.allclose(s_out.hidden_states[2][real], t_out.hidden_states[2][real], atol=1e-3)
    # a student with every teacher layer is the teacher (single segment): logits identical
    full = models.build_student(teacher, layers=[0, 1, 2, 3]).eval()
    with torch.no_grad():
        full_logits = full(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.allclose(full_logits[real], t_out.logits[real], atol=1e-4)


def test_student_save_reload_identical(tmp_path):
    teacher = tiny_teacher()
    student = models.build_student(teacher).eval()  # default: half the layers, [0, 3] for 4
    assert student.config.teacher_layers == [0, 3]
    out_dir = models.save_model(student, tmp_path / "student", tiny_tokenizer())
    reloaded = AutoModelForMaskedLM.from_pretrained(out_dir).eval()
    assert type(reloaded).__name__ == "DistilBertForMaskedLM" and reloaded.config.teacher_layers == [0, 3]
    input_ids, attention_mask = batch()
    with torch.no_grad():
        assert torch.equal(student(input_ids=input_ids, attention_mask=attention_mask).logits,
                           reloaded(input_ids=input_ids, attention_mask=attention_mask).logits)
    assert [f.name for f in models.weight_files(out_dir)] == ["model.safetensors"]  # not the tokenizer's files
    size = sum(f.stat().st_size for f in models.weight_files(out_dir)) / 1e6
    assert 0.9 * 4 * models.count_parameters(student) / 1e6 < size < 1.2 * 4 * models.count_parameters(student) / 1e6


def test_random_init_student():
    teacher = tiny_teacher()
    student = models.build_student(teacher, n_layers=2, random_init=True)
    assert student.config.n_layers == 2
    assert not torch.allclose(student.distilbert.transformer.layer[0].attention.q_lin.weight,
                              teacher.bert.encoder.layer[0].attention.self.query.weight)
    with pytest.raises(ValueError, match="layers"):
        models.build_student(teacher, layers=[0, 4])
    with pytest.raises(ValueError, match="n_layers"):
        models.build_student(teacher, layers=[0, 1], n_layers=3)


def test_random_init_drawn_from_its_seed_whatever_ran_before():
    teacher = tiny_teacher()
    torch.manual_seed(1)
    a = models.build_student(teacher, random_init=True, seed=56)
    torch.randn(1000)  # another earlier consumer of the global RNG
    after = torch.get_rng_state()
    b = models.build_student(teacher, random_init=True, seed=56)
    assert torch.equal(torch.get_rng_state(), after)  # the global RNG is left as it was
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    c = models.build_student(teacher, random_init=True, seed=57)
    word = "distilbert.transformer.layer.0.ffn.lin1.weight"
    assert not torch.equal(a.state_dict()[word], c.state_dict()[word])
    copied = models.build_student(teacher, seed=56)  # seed matters only for random_init
    assert torch.equal(copied.state_dict()[word], teacher.state_dict()["bert.encoder.layer.0.intermediate.dense.weight"])


def test_layer_map():
    student = models.build_student(tiny_teacher(), layers=[0, 2, 3])
    assert models.layer_map(student, "last") == [(-1, -1)]
    assert models.layer_map(student, "all") == [(1, 1), (2, 3), (3, 4)]


@pytest.mark.skipif(not MINILM.is_dir(), reason="all-MiniLM-L6-v2 not available")
def test_minilm_teacher():
    teacher, has_head = load_teacher(str(MINILM))
    assert not has_head and teacher.config.num_hidden_layers == 6
    student = models.build_student(teacher).eval()
    assert student.config.teacher_layers == [0, 2, 5]
    input_ids, attention_mask = torch.tensor([[101, 7592, 2088, 2003, 102]]), torch.ones(1, 5, dtype=torch.long)
    with torch.no_grad():
        assert torch.allclose(student.distilbert.embeddings(input_ids), teacher.bert.embeddings(input_ids), atol=1e-5)


def test_set_torch_threads_one_for_tiny_models_and_respects_omp_num_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        tiny = tiny_teacher()  # ~0.1M parameters
        big = torch.nn.Linear(3000, 2000)  # 6M parameters
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(models, "_DEFAULT_THREADS", 3)
        assert models.set_torch_threads(tiny) == 1 == torch.get_num_threads()
        assert models.set_torch_threads(big) == 3 == torch.get_num_threads()  # back to torch's default
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert models.set_torch_threads(tiny) == 2 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "many")
        with pytest.raises(ValueError, match="OMP_NUM_THREADS='many'"):
            models.set_torch_threads(tiny)
    finally:
        torch.set_num_threads(before)


FAULTS_PER_STEP = """
import resource, sys, torch
from lib import models
if sys.argv[1] == "keep":
    assert models.keep_freed_memory()
torch.manual_seed(0)
embedding = torch.nn.Embedding(2 ** 17, 128)  # 64 MiB: its dense gradient is allocated anew each step
optimizer = torch.optim.SGD(embedding.parameters(), lr=0.1)
for step in range(24):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    embedding(torch.randint(0, 2 ** 17, (64,))).sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory sets glibc's malloc")
def test_kept_freed_memory_is_reused_without_faulting_in_new_pages():
    """What keep_freed_memory buys: a training step's large gradient buffer, freed and allocated again each step,
    comes back without page faults once the heap has settled (a few steps), where glibc's defaults unmap it and
    the kernel faults every page in again, every step (one fresh process each)."""
    def faults_of_the_last_steps(mode, last=8):
        done = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True)
        return sum(int(n) for n in done.stdout.split()[-last:])

    pages = 2 ** 26 // resource.getpagesize()  # of one gradient
    default, kept = faults_of_the_last_steps("default"), faults_of_the_last_steps("keep")
    assert default > 4 * pages, default  # 8 steps, each faulting its gradient in (fewer only with huge pages)
    assert kept <= 2 * pages, kept  # mostly 0; allow two steps' worth, as the heap may still be settling


def test_set_torch_threads_keeps_freed_memory_on_a_cpu_run(monkeypatch):
    calls = []
    monkeypatch.setattr(models, "keep_freed_memory", lambda: calls.append("kept"))
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        models.set_torch_threads(tiny_teacher())
        assert calls == ["kept"]
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU run: glibc's defaults stay
        models.set_torch_threads(tiny_teacher())
        assert calls == ["kept"]
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- count_parameters

def test_parameter_counts_follow_the_papers_convention():
    # the paper's counts are of the encoders without the MLM head; BertConfig() / DistilBertConfig() defaults are
    # bert-base-uncased / distilbert-base-uncased
    from transformers import AutoModel, DistilBertConfig
    from lib import paper
    bert = models.count_parameters(AutoModel.from_config(BertConfig()))
    distilbert = models.count_parameters(AutoModel.from_config(DistilBertConfig()))
    assert abs(bert / 1e6 - paper.TABLE3[paper.BERT_BASE]["params_m"]) < 1
    assert abs(distilbert / 1e6 - paper.TABLE3[paper.DISTILBERT]["params_m"]) < 1
    assert 109e6 <= bert <= 110e6 and 66e6 <= distilbert <= 67e6


def test_mlm_head_is_counted_when_given_and_tied_embeddings_once():
    kwargs = dict(vocab_size=1200, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    tied = BertForMaskedLM(BertConfig(tie_word_embeddings=True, **kwargs))
    untied = BertForMaskedLM(BertConfig(tie_word_embeddings=False, **kwargs))
    assert tied.cls.predictions.decoder.weight is tied.bert.embeddings.word_embeddings.weight
    # the head: transform dense 32x32 + bias, its LayerNorm, the decoder bias; the decoder weight is the embedding
    assert models.count_parameters(tied) - models.count_parameters(tied.bert) == 32 * 32 + 32 + 2 * 32 + 1200
    # untied, the decoder has its own weight and its own bias besides the head's
    assert models.count_parameters(untied) - models.count_parameters(tied) == 1200 * 32 + 1200


def test_quantized_models_keep_their_count():
    model = BertModel(BertConfig(vocab_size=125, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=64)).eval()
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    assert sum(p.numel() for p in quantized.parameters()) < models.count_parameters(model)  # packed weights hide
    assert models.count_parameters(quantized) == models.count_parameters(model)

    class Exported:  # stands for lib.quantize.OrtModel: not a torch module, carries its source's count
        num_parameters = 1234
    assert models.count_parameters(Exported()) == 1234


def test_a_saved_student_gets_a_model_card_that_changes_neither_its_weights_nor_its_fingerprint(tmp_path):
    import hashlib
    import types

    import yaml
    from transformers import AutoModel

    from lib import config, finetune, results
    params = config.load_params("distill", profile="smoke", run_dir=str(tmp_path), results_dir=str(tmp_path / "r"))
    folder = models.save_model(models.build_student(tiny_teacher()), tmp_path / params.run_name, tiny_tokenizer())
    weights = hashlib.sha1((folder / "model.safetensors").read_bytes()).hexdigest()
    fingerprint = finetune.model_fingerprint(folder)
    record = types.SimpleNamespace(student_parameters=123, student_layers=[0, 3], steps=40, tokens=5120,
                                   final={"loss": 1.5, "loss_ce": 0.25}, heldout={"mlm_accuracy": 0.125},
                                   provenance=results.provenance(params))
    card = models.student_card(params, record)
    assert card == folder / "README.md"
    front, body = models.read_model_card(folder)
    assert yaml.safe_load(card.read_text().split("---\n")[1]) == front  # the hub's front matter: YAML
    assert front["library_name"] == "transformers" and "distilbert-reproduced" in front["tags"]
    assert "base_model" not in front  # the smoke teacher is a folder of this run, without a card here
    assert "| final loss_ce | 0.25 |" in body and "| mlm_accuracy | 0.125 |" in body
    assert f"git commit: `{record.provenance['git_commit']}`" in body and "run_name: student" in body
    assert hashlib.sha1((folder / "model.safetensors").read_bytes()).hexdigest() == weights
    assert finetune.model_fingerprint(folder) == fingerprint  # results keyed on the model stay valid
    assert AutoModel.from_pretrained(folder).config.model_type == "distilbert"


def test_base_model_follows_a_local_teachers_card(tmp_path):
    assert models.base_model_of("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert models.base_model_of(str(tmp_path / "nowhere")) is None and models.base_model_of("runs/x/teacher") is None
    models.write_model_card(tmp_path, "a teacher", "adapted", base_model="google-bert/bert-base-uncased")
    assert models.base_model_of(str(tmp_path)) == "google-bert/bert-base-uncased"


def test_every_model_stage_2_saves_has_its_card(tmp_path):
    from lib import config, distill
    params = config.load_params("distill", profile="smoke", teacher="smoke/tiny-bert", run_dir=str(tmp_path),
                                results_dir=str(tmp_path / "results"), max_steps=2, checkpoint_every=2, log_every=1,
                                heldout_sequences=8, undistilled_name="undistilled",
                                ablations={"random": {"random_init": True}})
    distill.run(params, progress=False)
    for name in ("student", "random", "undistilled"):
        front, body = models.read_model_card(tmp_path / name)
        assert front["base_model"] == "smoke/tiny-bert" and front["library_name"] == "transformers", name
        assert "| mlm_accuracy |" in body and "git commit: `" in body, name  # held-out measures, provenance
    assert "undistilled_name: undistilled" in models.read_model_card(tmp_path / "undistilled")[1]


def test_a_readme_without_front_matter_is_a_card_without_metadata(tmp_path):
    (tmp_path / "README.md").write_text("# my model\n\nfine-tuned by hand --- see notes\n")
    assert models.read_model_card(tmp_path) == ({}, "# my model\n\nfine-tuned by hand --- see notes\n")
    (tmp_path / "README.md").write_text("---\nbase_model: [unclosed\n---\nbody\n")
    assert models.read_model_card(tmp_path)[0] == {}
