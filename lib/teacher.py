"""The teacher: loading, masked-LM evaluation, the MLM head's adaptation, and stage 1 (``run``).

Stage 1 checks that the teacher can teach: its masked-token accuracy and perplexity on held-out text, before and
after adaptation. A teacher without a masked-LM head (the offline mirror's all-MiniLM-L6-v2 is a sentence
encoder) gets one trained on the corpus first; ``run`` holds that decision (adapt_mlm: auto, always,
never), saves the (adapted) teacher to run_dir/teacher for stage 2 and writes results/<profile>/teacher.json;
``write_teacher_logits`` writes the Background chapter's example logits. The notebook narrates and calls.
"""
import dataclasses
import json
import math
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer, BertForMaskedLM, get_linear_schedule_with_warmup, set_seed

from lib import config, data, hub, preflight, results
from lib.checkpoints import hold_locks, signals_interrupt
from lib.config import ParameterError
from lib.data import collate, length_grouped_batches, mlm_token_probs, sequence_lengths, special_token_ids
from lib.models import count_parameters, set_torch_threads, teacher_card
from lib.training import MaskingSpec, adamw, autocast, optimizer_step, select_precision, weights_digest

MIN_LENGTH = 12  # held-out and training sequences of <= 11 tokens are dropped, as in stage 2 (released recipe)
CURVE_FIELDS = ("mlm_accuracy", "perplexity", "loss")  # of evaluate_mlm, kept per point of the adaptation curve
LOGITS_TOP_K = 10  # teacher_logits.json: the top-k logits at the masked position


def load_teacher(path, mirror=None):
    """A BERT masked-LM teacher from a hub id or directory, in eval mode, and whether its MLM head was in the
    checkpoint (an encoder-only checkpoint such as all-MiniLM-L6-v2 loads with a randomly initialised head)."""
    config = hub.from_pretrained(AutoConfig, path, mirror=mirror)
    if config.model_type != "bert":
        raise ValueError(f"teacher {path!r} is a {config.model_type!r} model; the DistilBERT student is built from "
                         f"BERT-architecture teachers (model_type 'bert') only")
    teacher, info = hub.from_pretrained(BertForMaskedLM, path, mirror=mirror, output_loading_info=True)
    missing = set(info["missing_keys"])
    # decoder.weight is tied to the word embeddings, and decoder.bias to cls.predictions.bias (either name may
    # hold the bias in a checkpoint): neither counts as missing on its own
    head_missing = {k for k in missing if k.startswith("cls.predictions.")} - {"cls.predictions.decoder.weight"}
    if {"cls.predictions.bias", "cls.predictions.decoder.bias"} - missing:
        head_missing -= {"cls.predictions.bias", "cls.predictions.decoder.bias"}
    teacher.eval()
    return teacher, not head_missing


def _mlm_batches(lengths, batch_size):
    """Every index once, in batches of similar lengths (evaluation order, deterministic)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def _uniform_probs(model, tokenizer):
    return mlm_token_probs(np.ones(model.config.vocab_size), 0.0, special_token_ids(tokenizer))


def _masked_logits(model, input_ids, attention_mask, targets):
    """The model's MLM logits at the ``targets`` positions only, (n_targets, vocab): its head (BERT's cls,
    DistilBERT's vocab_transform on) takes the target rows alone, as in training (lib.training.forward_losses):
    the vocabulary projection over every position would dominate the evaluation's time."""
    head = getattr(model, "cls", None) or getattr(model, "vocab_transform", None)
    if head is None:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[targets]
    handle = head.register_forward_pre_hook(lambda module, args: (args[0][targets],))
    try:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits
    finally:
        handle.remove()


@torch.no_grad()
def evaluate_mlm(model, dataset, tokenizer, token_probs=None, batch_size=32, max_sequences=None, mlm_mask_prop=0.15,
                 word_mask=0.8, word_keep=0.1, word_rand=0.1, seed=0, precision="auto", device=None, progress=True,
                 teacher=None):
    """Masked-token accuracy and perplexity (exp of the mean cross-entropy over masked targets) of a masked-LM
    on held-out sequences. Masks are drawn as in training (token_probs None: uniformly over non-special
    tokens) from a fixed seed with a generator of their own, so two models evaluated on the same dataset see the
    same masks and the global RNG is untouched. With ``teacher`` (same vocabulary) also kl_to_teacher: the mean over
    the masked targets of KL(teacher || model) at temperature 1, in nats. The model is evaluated in eval mode
    (no dropout) and put back in the mode it was in."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype, _ = select_precision(precision, device)
    if max_sequences is not None:
        dataset = dataset.select(range(min(max_sequences, len(dataset))))
    token_probs = _uniform_probs(model, tokenizer) if token_probs is None else token_probs
    masking = MaskingSpec(token_probs, tokenizer.mask_token_id, special_token_ids(tokenizer), mlm_mask_prop,
                          word_mask, word_keep, word_rand)
    generator = torch.Generator().manual_seed(seed)
    models = [model] + ([teacher] if teacher is not None else [])
    modes = [m.training for m in models]
    for m in models:
        m.to(device).eval()
    set_torch_threads(model)
    loss_sum, kl_sum, correct, n_targets = 0.0, 0.0, 0, 0
    batches = _mlm_batches(sequence_lengths(dataset), batch_size)
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=partial(collate, pad_token_id=tokenizer.pad_token_id))
    for batch in tqdm(loader, desc="evaluate MLM", disable=not progress):
        input_ids, labels = masking.apply(batch, generator)
        input_ids, attention_mask, labels = input_ids.to(device), batch["attention_mask"].to(device), labels.to(device)
        targets = labels != -100
        with autocast(device, dtype):
            logits = _masked_logits(model, input_ids, attention_mask, targets).float()
            teacher_logits = (None if teacher is None
                              else _masked_logits(teacher, input_ids, attention_mask, targets).float())
        labels = labels[targets]
        loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(-1) == labels).sum())
        n_targets += int(labels.numel())
        if teacher is not None:
            kl_sum += float(torch.nn.functional.kl_div(logits.log_softmax(-1), teacher_logits.log_softmax(-1),
                                                       log_target=True, reduction="sum"))
    for m, mode in zip(models, modes):
        m.train(mode)
    if n_targets == 0:
        raise ValueError("no masked targets: the evaluation dataset is empty")
    result = dict(mlm_accuracy=correct / n_targets, perplexity=math.exp(loss_sum / n_targets),
                  loss=loss_sum / n_targets, n_tokens=n_targets, n_sequences=len(dataset))
    if teacher is not None:
        result["kl_to_teacher"] = kl_sum / n_targets
    return result


def train_mlm_head(teacher, dataset, tokenizer, steps, top_layers=0, learning_rate=1e-4, batch_size=32,
                   token_probs=None, mlm_mask_prop=0.15, word_mask=0.8, word_keep=0.1, word_rand=0.1,
                   warmup_prop=0.05, weight_decay=0.0, max_grad_norm=1.0, precision="auto", seed=56, device=None,
                   log_every=10, progress=True, evaluate=None, eval_every=0):
    """Adapt a BertForMaskedLM teacher to the corpus: train its MLM head (transform and output bias; the output
    matrix is tied to the word embeddings and stays fixed) and, with top_layers > 0, its top encoder layers, by
    plain masked-LM for ``steps`` optimizer steps. Everything else stays frozen. The head runs on the masked rows
    only (the vocabulary projection of every position would be most of a step).

    evaluate: model -> evaluate_mlm's dict, on sequences held out of training; called at step 0, every
    ``eval_every`` steps (0: none between) and at the end, giving the adaptation curve. The teacher is left with the
    trained weights of the evaluation with the highest mlm_accuracy (the last one on a tie). Returns dict(log,
    curve, best_step, ...)."""
    if steps <= 0:
        raise ParameterError("adapt_steps", f"must be > 0 to adapt the MLM head, got {steps}")
    n_layers = teacher.config.num_hidden_layers
    if not 0 <= top_layers <= n_layers:
        raise ParameterError("adapt_top_layers", f"must be in 0..{n_layers}, got {top_layers}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype, use_scaler = select_precision(precision, device)
    token_probs = _uniform_probs(teacher, tokenizer) if token_probs is None else token_probs
    masking = MaskingSpec(token_probs, tokenizer.mask_token_id, special_token_ids(tokenizer), mlm_mask_prop,
                          word_mask, word_keep, word_rand)

    tied = teacher.cls.predictions.decoder.weight is teacher.get_input_embeddings().weight
    trainable = [p for name, p in teacher.cls.predictions.named_parameters() if not (tied and name == "decoder.weight")]
    trainable += [p for layer in teacher.bert.encoder.layer[n_layers - top_layers:] for p in layer.parameters()]
    flags = {name: p.requires_grad for name, p in teacher.named_parameters()}
    teacher.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    teacher.to(device).train()
    set_torch_threads(teacher)
    optimizer = adamw(teacher, learning_rate, (0.9, 0.999), 1e-6, weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(warmup_prop * steps), steps)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    lengths = sequence_lengths(dataset)
    if len(lengths) < batch_size:
        raise ParameterError("batch_size", f"{batch_size} is more than the {len(lengths)} sequences available")
    collate_fn = partial(collate, pad_token_id=tokenizer.pad_token_id)

    log, epoch, step, started = [], 0, 0, time.perf_counter()
    curve, best = [], None

    def checkpoint():  # one point of the curve; keep the trained weights of the best one so far
        nonlocal best
        if evaluate is None:
            return
        point = {"step": step, **{k: v for k, v in evaluate(teacher).items() if k in CURVE_FIELDS}}
        curve.append(point)
        teacher.train()
        if best is None or point["mlm_accuracy"] >= best[0]["mlm_accuracy"]:
            best = point, [p.detach().clone() for p in trainable]

    checkpoint()
    bar = tqdm(total=steps, desc="adapt MLM head", disable=not progress)
    try:
        while step < steps:
            for batch in DataLoader(dataset, batch_sampler=length_grouped_batches(lengths, batch_size, seed + epoch),
                                    collate_fn=collate_fn):
                input_ids, labels = masking.apply(batch, generator)
                labels = labels.to(device)
                targets = labels != -100
                with autocast(device, dtype):
                    logits = _masked_logits(teacher, input_ids.to(device), batch["attention_mask"].to(device), targets)
                loss = torch.nn.functional.cross_entropy(logits.float(), labels[targets])
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite MLM loss at step {step + 1}: lower adapt_learning_rate")
                scaler.scale(loss).backward()
                _, lr = optimizer_step(optimizer, scheduler, scaler, trainable, max_grad_norm)
                step += 1
                bar.update(1)
                if step % log_every == 0 or step == steps:
                    log.append(dict(step=step, loss=float(loss.detach()), lr=lr,
                                    elapsed_s=round(time.perf_counter() - started, 3)))
                    bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
                if (eval_every and step % eval_every == 0) or step == steps:
                    checkpoint()
                if step >= steps:
                    break
            epoch += 1
    finally:
        bar.close()
        for name, p in teacher.named_parameters():
            p.requires_grad_(flags[name])
        teacher.eval()
    if best is not None:
        with torch.no_grad():
            for p, kept in zip(trainable, best[1]):
                p.copy_(kept)
    return dict(log=log, steps=step, wall_time_s=time.perf_counter() - started, curve=curve,
                best_step=best[0]["step"] if best else step,
                trainable_parameters=sum(p.numel() for p in trainable), top_layers=top_layers)


def adapt(teacher, train_set, selection, tokenizer, params, progress=True):
    """The MLM-head adaptation by its rule: each number of top layers in params.adapt_top_layers trained for
    adapt_steps from the same start, each scored on the ``selection`` sequences every adapt_eval_every steps; the
    teacher keeps the (top layers, step) of the highest selection accuracy. Returns (the chosen run's loss log, the
    record: every run's curve and the choice)."""
    candidates = params.adapt_top_layers if isinstance(params.adapt_top_layers, list) else [params.adapt_top_layers]
    if not selection:
        raise ParameterError("heldout_fraction", "no held-out sequences are left to choose the adaptation on: "
                                                 "raise heldout_fraction or lower eval_sequences")
    start = {name: value.clone() for name, value in teacher.state_dict().items()}
    score = partial(evaluate_mlm, dataset=selection, tokenizer=tokenizer, batch_size=params.batch_size,
                    seed=params.seed, progress=False)
    runs, best = [], None
    for top_layers in candidates:
        teacher.load_state_dict(start)
        out = train_mlm_head(teacher, train_set, tokenizer, steps=params.adapt_steps, top_layers=top_layers,
                             learning_rate=params.adapt_learning_rate, batch_size=params.batch_size, seed=params.seed,
                             precision=params.precision, progress=progress, evaluate=score,
                             eval_every=params.adapt_eval_every)
        accuracy = max(point["mlm_accuracy"] for point in out["curve"])
        runs.append(dict(top_layers=top_layers, curve=out["curve"], best_step=out["best_step"],
                         best_accuracy=accuracy, wall_time_s=round(out["wall_time_s"], 3),
                         trainable_parameters=out["trainable_parameters"]))
        if best is None or accuracy > best[0]:
            best = accuracy, top_layers, out["log"], {k: v.clone() for k, v in teacher.state_dict().items()}
    accuracy, top_layers, log, state = best
    teacher.load_state_dict(state)
    chosen = next(run for run in runs if run["top_layers"] == top_layers)
    return log, dict(runs=runs, chosen=dict(top_layers=top_layers, step=chosen["best_step"], selection_accuracy=accuracy),
                     selection_sequences=len(selection), eval_every=params.adapt_eval_every)


def needs_adaptation(adapt_mlm, has_mlm_head):
    """Whether stage 1 trains the MLM head: always, never, or (auto) only when the checkpoint had none."""
    if adapt_mlm not in config.ADAPT_MLM:
        raise ParameterError("adapt_mlm", f"{adapt_mlm!r} is not one of {list(config.ADAPT_MLM)}")
    return adapt_mlm == "always" or (adapt_mlm == "auto" and not has_mlm_head)


@dataclasses.dataclass
class PreparedTeacher:
    """What stage 1 made: the (adapted) teacher, its tokenizer, the held-out split and the checks."""
    teacher: BertForMaskedLM
    tokenizer: object
    train_set: object            # datasets.Dataset of tokenized corpus sequences (adaptation data)
    heldout: object              # the held-out sequences of the masked-LM check
    has_mlm_head: bool           # whether the checkpoint held a trained masked-LM head
    adapted: bool
    mlm_before: dict             # evaluate_mlm before adaptation
    mlm_after: dict              # and after (mlm_before when not adapted)
    loss_log: list               # train_mlm_head's log records (step, loss, lr, elapsed_s); [] when not adapted
    saved_to: Path               # run_dir/teacher
    record: results.TeacherResult


def run(params, progress=True):
    """Stage 1 for a TeacherParams (lib.config.STAGES): load the teacher and the corpus, evaluate the masked LM on
    held-out sequences, adapt the MLM head when params.adapt_mlm says so and evaluate again, save the teacher to
    run_dir/teacher with its model card and write results/<profile>/teacher.json. Returns a PreparedTeacher (its
    loss_log: the adaptation's). The teacher's folder is locked first (lib.checkpoints): one stage 1 at a time per
    run_dir. A re-run reuses the teacher a finished stage 1 saved with the same parameters (saved_teacher)."""
    with hold_locks(preflight.output_folders(params)), signals_interrupt():
        prepared = _prepare_teacher(params, progress)
        teacher_card(prepared.saved_to, params, prepared.record)
        return prepared


def _prepare_teacher(params, progress):
    started = time.perf_counter()
    tokenizer = hub.from_pretrained(AutoTokenizer, params.teacher, params.mirror)
    saved_to = params.path("run_dir") / config.TEACHER
    finished = saved_teacher(params, saved_to)
    set_seed(params.seed)  # after saved_teacher: a fresh teacher's new head is drawn as if it had not run
    if finished is None:
        teacher, has_mlm_head = load_teacher(hub.resolve(params.teacher, params.mirror))
    sequences = data.tokenize_corpus(data.read_corpus(params.corpus, params.mirror), tokenizer, params.max_length,
                                     min_length=MIN_LENGTH,
                                     cache_dir=params.path("run_dir") / "corpus" / config.TEACHER)
    split = sequences.train_test_split(test_size=params.heldout_fraction, seed=params.seed)
    train_set, held = split["train"], split["test"]
    heldout = held.select(range(min(params.eval_sequences, len(held))))
    # the adaptation is chosen on other held-out sequences than the ones its accuracy is reported on
    selection = held.select(range(len(heldout), min(2 * len(heldout), len(held))))
    if finished is not None:
        teacher, record = finished
        return PreparedTeacher(teacher, tokenizer, train_set, heldout, record.had_mlm_head, record.adapted,
                               record.mlm_before, record.mlm_after, record.loss_log or [], saved_to, record)

    evaluate = partial(evaluate_mlm, tokenizer=tokenizer, batch_size=params.batch_size, seed=params.seed,
                       progress=progress)
    before = evaluate(teacher, heldout)
    adapted = needs_adaptation(params.adapt_mlm, has_mlm_head)
    loss_log, adaptation = [], None
    if adapted:
        loss_log, adaptation = adapt(teacher, train_set, selection, tokenizer, params, progress)
    after = evaluate(teacher, heldout) if adapted else before

    teacher.save_pretrained(saved_to)
    tokenizer.save_pretrained(saved_to)
    record = results.write_result(
        params, config.TEACHER, time.perf_counter() - started, teacher=params.teacher,
        saved_to=results.repo_relative(saved_to), parameters=count_parameters(teacher),
        layers=teacher.config.num_hidden_layers, hidden_size=teacher.config.hidden_size, had_mlm_head=has_mlm_head,
        adapted=adapted, heldout_sequences=len(heldout), mlm_before=before, mlm_after=after, adaptation=adaptation,
        loss_log=loss_log, weights=weights_digest(teacher))
    return PreparedTeacher(teacher, tokenizer, train_set, heldout, has_mlm_head, adapted, before, after, loss_log,
                           saved_to, record)


def saved_teacher(params, saved_to):
    """(the teacher saved in ``saved_to``, its record) when a finished stage 1 made it with these parameters: the
    record in results_dir names the same parameters (recompute aside) and the saved weights' digest; else None,
    saying why when a record exists. A re-run then skips the adaptation, the longest part of the stage."""
    path = params.path("results_dir") / f"{config.TEACHER}.json"
    if params.recompute or not path.is_file() or not (saved_to / "config.json").is_file():
        return None
    try:
        record = results.read(path, config.TEACHER)
    except ValueError as err:
        print(f"{path}: unreadable, preparing the teacher again ({err})", flush=True)
        return None

    def settings(values):  # as they read back from a results file
        return json.loads(json.dumps({k: v for k, v in values.items() if k != "recompute"}, default=str))
    if record.weights is None:
        print(f"{path} records no weights digest (written before stage 1 resumed); preparing the teacher again",
              flush=True)
        return None
    if settings(record.provenance.get("params", {})) != settings(config.as_dict(params)):
        print(f"{path}: written with other parameters; preparing the teacher again", flush=True)
        return None
    teacher, _ = load_teacher(str(saved_to))
    if weights_digest(teacher) != record.weights:
        print(f"{saved_to}: its weights are not the ones {path} records; preparing the teacher again", flush=True)
        return None
    print(f"reusing the teacher in {saved_to}: {path} was written with these parameters at commit "
          f"{record.provenance.get('git_commit')} (recompute=True prepares it again)", flush=True)
    return teacher, record


FIGURE_TEMPERATURES = (0.5, 1, 2, 4, 8)  # the Background chapter's Figure 1 slider


@torch.no_grad()
def write_teacher_logits(params, teacher, tokenizer, heldout, length=32, top_k=LOGITS_TOP_K, candidates=64,
                         temperatures=FIGURE_TEMPERATURES):
    """results/<profile>/teacher_logits.json, the Background chapter's temperature figure: the teacher's top_k logits
    at one masked position of held-out text. The position is the middle one of the first ``length`` tokens of the
    first of ``candidates`` held-out rows whose correct (original) token is among the teacher's top_k there, so the
    figure can mark the answer; with none, the first row's, and ``answer_rank`` is None. ``logsumexp`` holds the
    full-vocabulary log-normaliser of logits / T for each of ``temperatures``, so the figure shows each candidate's
    share of the whole distribution rather than renormalising over the top_k. Returns the record."""
    rows = [list(heldout[i]["input_ids"][:length]) for i in range(min(candidates, len(heldout)))]
    chosen = None
    for ids in rows:
        position = len(ids) // 2
        answer = ids[position]
        if answer in tokenizer.all_special_ids:
            continue
        masked = ids[:position] + [tokenizer.mask_token_id] + ids[position + 1:]
        logits = teacher(input_ids=torch.tensor([masked], device=teacher.device)).logits[0, position].float().cpu()
        top = torch.topk(logits, top_k)
        rank = top.indices.tolist().index(answer) if answer in top.indices.tolist() else None
        if chosen is None or rank is not None:
            chosen = (masked, position, answer, logits, top, rank)
        if rank is not None:
            break
    masked, position, answer, logits, top, rank = chosen
    return results.write_result(params, config.TEACHER_LOGITS, 0.0, text=tokenizer.decode(masked[1:]),
                                position=position, tokens=tokenizer.convert_ids_to_tokens(top.indices.tolist()),
                                logits=top.values.tolist(), answer=tokenizer.convert_ids_to_tokens(answer),
                                answer_rank=rank, temperatures=list(temperatures),
                                logsumexp=[float(torch.logsumexp(logits / t, -1)) for t in temperatures])
