"""Distillation training, the teacher's MLM-head adaptation and masked-LM evaluation.

One code path for CPU, one GPU and several: ``distill`` runs as is in a single process, or in every process of
a DDP launch (gloo on CPU, NCCL on GPUs); the stage's command is ``torchrun --standalone --nproc_per_node N -m
lib.distill`` (lib/distill.py; ``accelerate launch --cpu --num_processes 2`` starts one process only).
Each process takes every world_size-th micro-batch of the same length-grouped order.

Reproducibility and resume: the batch order is a function of (seed, epoch), and the masks and dropout of an
optimizer step are drawn from generators seeded with (seed, step, rank); a checkpoint therefore only needs the
weights, optimizer, scheduler, grad scaler and step counter, and a resumed run repeats the uninterrupted one.
"""
import contextlib
import dataclasses
import hashlib
import json
import math
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from lib.checkpoints import (CheckpointError, acquire_lock, clear_checkpoints, find_checkpoint, load_state,
                             release_lock, save_checkpoint, set_aside)
from lib.config import PRECISIONS, ParameterError
from lib.data import (collate, length_grouped_batches, mask_tokens, mlm_token_probs, sequence_lengths,
                      special_token_ids, token_counts)
from lib.losses import distillation_loss, logit_rows
from lib.models import build_student, count_parameters, save_model, set_torch_threads
from lib.models import layer_map as make_layer_map

LOSS_TERMS = ("loss", "loss_ce", "loss_mlm", "loss_cos", "loss_mse")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# Tests and `scripts/gpu_check.py --cpu` set this to run the fp16 + GradScaler path on CPU (emulated and slow there,
# so never a user parameter): select_precision then allows fp16 on CPU.
CPU_FP16 = False


def select_precision(precision="auto", device="cpu", capability=None):
    """(autocast dtype, use_grad_scaler) for a precision parameter on a device.

    auto: bf16 on CUDA compute capability >= 8, fp16 with a grad scaler below (a T4 reports
    torch.cuda.is_bf16_supported() but only emulates bf16), fp32 elsewhere. float32 means no autocast.
    capability: a CUDA GPU's (major, minor), e.g. (7, 5) for a T4, to get the choice for that GPU on any machine
    (the device is then taken to be that GPU); default: the device's own.
    """
    if precision not in PRECISIONS:
        raise ParameterError("precision", f"{precision!r} is not one of {list(PRECISIONS)}")
    device = torch.device(device)
    if capability is not None or device.type == "cuda":
        major, minor = capability or torch.cuda.get_device_capability(device)
        if precision == "auto":
            precision = "bf16" if major >= 8 else "fp16"
        if precision == "bf16" and major < 8:
            raise ParameterError("precision", f"bf16 needs compute capability >= 8, this GPU has {major}.{minor} "
                                              "(bf16 is emulated there): use fp16 or auto")
    else:
        if precision == "auto":
            precision = "fp32"
        if precision == "fp16" and not CPU_FP16:
            raise ParameterError("precision", f"fp16 training needs a CUDA GPU; on {device.type} use fp32 or bf16")
    return DTYPES[precision], precision == "fp16"


def autocast(device, dtype):
    """torch.autocast for a mixed-precision dtype, a no-op for float32."""
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32)


def loss_weights(params):
    """The distillation_loss keyword arguments held by a DistillParams."""
    return dict(alpha_ce=params.alpha_ce, alpha_mlm=params.alpha_mlm, alpha_cos=params.alpha_cos,
                alpha_mse=params.alpha_mse, temperature=params.temperature,
                restrict_ce_to_mask=params.restrict_ce_to_mask)


def forward_losses(teacher, student, input_ids, attention_mask, labels, weights, layer_map=None,
                   dtype=torch.float32):
    """Teacher (inference mode) and student forward passes on the same masked batch, and the loss terms.

    The models' MLM heads run on the rows some loss term uses only (logit_rows: padding never, the masked tokens
    only for L_mlm alone): the vocabulary projection is the largest matmul of a step, and its logits the largest
    tensors. The teacher runs only for the terms that need it (none with alpha_ce = alpha_mse = alpha_cos = 0).
    """
    need_hidden = weights.get("alpha_cos", 0) > 0
    need_teacher_logits = any(weights.get(name, 0) > 0 for name in ("alpha_ce", "alpha_mse"))
    rows = logit_rows(attention_mask, labels, **weights)
    teacher_out = SimpleNamespace(logits=None, hidden_states=None)
    if need_hidden or need_teacher_logits:
        with torch.inference_mode(), autocast(input_ids.device, dtype):
            encoded = teacher.bert(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=need_hidden)
            teacher_out.hidden_states = encoded.hidden_states
            if need_teacher_logits:
                teacher_out.logits = teacher.cls(encoded.last_hidden_state[rows])
    # the student's head (from vocab_transform on) takes the used rows only: a pre-hook selects them, so that the
    # model's own forward still runs (through a DistributedDataParallel wrapper too, which syncs the gradients)
    head = getattr(student, "module", student).vocab_transform
    handle = head.register_forward_pre_hook(lambda module, args: (args[0][rows],))
    try:
        with autocast(input_ids.device, dtype):
            student_out = student(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=need_hidden)
    finally:
        handle.remove()
    return distillation_loss(student_out, teacher_out, attention_mask, labels, layer_map=layer_map, **weights)


def adamw(model, learning_rate, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0):
    """AdamW with no weight decay on biases and LayerNorm weights (as the authors grouped them)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=tuple(betas), eps=eps)


def _step_seed(seed, step, rank):
    """Seed of one optimizer step on one process: resumed runs draw the same masks and dropout."""
    return ((seed * 1_000_003 + step) * 1_009 + rank) % 2 ** 62


def read_log(path):
    """The per-step log (JSON lines) as a list of dicts."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# DistillParams fields that do not shape the trajectory (folders, names, bookkeeping)
BOOKKEEPING = {"profile", "mirror", "run_dir", "results_dir", "run_name", "checkpoint_every", "resume",
               "resume_with_changes", "log_every", "undistilled_name", "ablations"}
# of the rest, the ones a resumed run cannot change at all: the data order and the student's shape
FIXED_ON_RESUME = {"seed", "batch_size", "gradient_accumulation_steps", "effective_batch_size", "corpus", "max_length", "min_length",
                   "teacher", "student_layers", "n_student_layers", "random_init"}


def trajectory_params(params):
    """The DistillParams values that shape the training trajectory (what a resume must not change silently).
    A path inside run_dir (the teacher of stage 1) is kept as "{run_dir}/...", so a run folder moved as a whole
    (onto a Drive mount, say) still resumes."""
    def relative(value):
        inside = isinstance(value, str) and params.run_dir and value.startswith(params.run_dir.rstrip("/") + "/")
        return "{run_dir}" + value[len(params.run_dir.rstrip("/")):] if inside else value
    return {k: relative(v) for k, v in dataclasses.asdict(params).items() if k not in BOOKKEEPING}


def resume_changes(saved, params, checkpoint):
    """{name: (checkpoint value, value now)} of the trajectory parameters this resume changes. Refused with a
    ParameterError naming the first one unless params.resume_with_changes (never for FIXED_ON_RESUME)."""
    now = trajectory_params(params)
    changed = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    fixed = sorted(set(changed) & FIXED_ON_RESUME)
    if fixed:
        name = fixed[0]
        raise ParameterError(name, f"the checkpoint {checkpoint} was made with {name}={changed[name][0]!r}, now "
                             f"{changed[name][1]!r}; a resumed run cannot change the data order or the student "
                             f"(changed: {fixed}). Set it back, or set resume=false to start over, or use another "
                             "run_dir/run_name")
    if changed and not params.resume_with_changes:
        name = sorted(changed)[0]
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        raise ParameterError(name, f"the checkpoint {checkpoint} was made with {name}={changed[name][0]!r}, now "
                             f"{changed[name][1]!r} (changed, checkpoint -> now: {listed}). Set it back to resume "
                             "the same run; or set resume_with_changes=true to continue with the new values from "
                             "the checkpoint's step on (the results then record each segment); or resume=false "
                             "to start over")
    return changed


def nan_advice(bad_step, terms, checkpoint, checkpoint_step, params, dtype):
    """The message of a non-finite loss: where the last good checkpoint is, and the exact way to continue."""
    lower = f"learning_rate={params.learning_rate / 10:g}"
    precision = " (or precision=fp32 instead of fp16)" if dtype == torch.float16 else ""
    if checkpoint_step is None:
        return (f"non-finite loss at optimizer step {bad_step} ({terms}) and no usable checkpoint. Run again with a "
                f"lower learning rate, e.g. {lower}{precision}, and resume=false.")
    return (f"non-finite loss at optimizer step {bad_step} ({terms}); the last checkpoint is {checkpoint} (step "
            f"{checkpoint_step}). To continue from it with a lower learning rate, run again with {lower}{precision}, "
            f"resume_with_changes=true and resume=true: the new learning rate holds from step {checkpoint_step} on "
            f"and the results record both segments. Or start over with {lower} and resume=false.")


def _lock_run(accelerator, output_dir):
    """The main process takes output_dir's run lock (None on the others); a refusal stops every process."""
    lock, error = None, None
    if accelerator.is_main_process:
        try:
            lock = acquire_lock(output_dir)
        except ParameterError as err:
            error = str(err)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        error = broadcast_object_list([error])[0]
    if error is not None:
        if lock is None and accelerator.is_main_process:
            raise ParameterError("run_dir", error.removeprefix("parameter 'run_dir': "))
        raise RuntimeError(error)
    return lock


def optimizer_step(optimizer, scheduler, scaler, parameters, max_grad_norm):
    """Unscale, clip, step, advance the schedule; returns (grad norm, the learning rate this step used)."""
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    lr = scheduler.get_last_lr()[0]
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, lr

def accumulation_steps(params, world_size):
    """Micro-batches per optimizer step on each process: effective_batch_size / (batch_size x world_size) when
    the effective batch is set (it then holds for any number of devices), else gradient_accumulation_steps."""
    if params.effective_batch_size is None:
        return params.gradient_accumulation_steps
    per_round = params.batch_size * world_size
    if params.effective_batch_size % per_round:
        raise ParameterError("effective_batch_size", f"{params.effective_batch_size} sequences per optimizer step is "
                             f"not a multiple of batch_size {params.batch_size} x {world_size} processes = {per_round}")
    return params.effective_batch_size // per_round


def distill(teacher, student, dataset, params, output_dir, tokenizer, token_probs=None, progress=True, on_log=None,
            device=None):
    """Distil ``teacher`` into ``student`` on ``dataset`` (input_ids [+ length] rows, see lib.data.tokenize_corpus)
    with the hyper-parameters of ``params`` (a DistillParams).

    output_dir becomes the final student's model directory (save_pretrained of model and tokenizer, loadable with
    AutoModelForMaskedLM) and also holds log.jsonl (a record every params.log_every optimizer steps) and
    two checkpoint slots, checkpoint-a/ and checkpoint-b/ (lib.checkpoints: every params.checkpoint_every steps, at the
    end and on KeyboardInterrupt; a resume verifies them and refuses changed trajectory parameters unless
    params.resume_with_changes), and run.lock while it runs (one run per folder). token_probs: masking
    weights (default: from the dataset's token counts with params.mlm_smoothing). on_log: called with each log
    record. device: "cpu" forces the CPU; default: CUDA when available. Returns a summary dict (steps, tokens,
    wall_time_s, final losses, log: the list of log records, output_dir, ...).
    """
    output_dir = Path(output_dir).expanduser()
    weights = loss_weights(params)
    heads_unused = params.alpha_ce == params.alpha_mlm == params.alpha_mse == 0
    # mixed_precision="no": autocast is ours (params.precision); else ACCELERATE_MIXED_PRECISION from a launcher or
    # `accelerate config` would wrap the student's forward in another autocast, whatever the stage asked for
    accelerator = Accelerator(cpu=device == "cpu" or not torch.cuda.is_available(), mixed_precision="no",
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=heads_unused)])
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    dtype, use_scaler = select_precision(params.precision, device)
    if params.alpha_cos > 0 and student.config.dim != teacher.config.hidden_size:
        raise ParameterError("alpha_cos", f"the cosine loss needs equal widths: student {student.config.dim}, "
                                          f"teacher {teacher.config.hidden_size}")

    special_ids = special_token_ids(tokenizer)
    if token_probs is None:
        counts = token_counts(dataset, student.config.vocab_size, progress=progress and main)
        token_probs = mlm_token_probs(counts, params.mlm_smoothing, special_ids)
    layers = make_layer_map(student, params.cos_layers)

    # data order: a function of (seed, epoch); each process takes every world-th micro-batch
    lengths = sequence_lengths(dataset)
    n_batches = len(lengths) // params.batch_size
    micro_per_epoch = n_batches // world
    accum = accumulation_steps(params, world)
    steps_per_epoch = micro_per_epoch // accum
    if steps_per_epoch == 0:  # blame the knob that made one step too big for the corpus
        culprit = "gradient_accumulation_steps" if n_batches >= world and accum > 1 else "batch_size"
        if culprit == "gradient_accumulation_steps" and params.effective_batch_size:
            culprit = "effective_batch_size"  # accumulation was derived from it
        raise ParameterError(culprit, f"the corpus has {len(lengths)} sequences (parameter 'corpus'), fewer than one "
                             f"optimizer step needs: batch_size {params.batch_size} x {accum} accumulation x {world} "
                             "processes; give a bigger corpus or a smaller step")
    total_steps = params.max_steps or steps_per_epoch * params.n_epoch
    warmup_steps = math.ceil(params.warmup_prop * total_steps)

    def epoch_batches(epoch):
        batches = length_grouped_batches(lengths, params.batch_size, params.seed + epoch)
        return batches[rank:micro_per_epoch * world:world]

    teacher.to(device).eval()
    set_torch_threads(teacher)  # one thread for tiny models: robust on a busy machine
    student.train()
    model = accelerator.prepare_model(student)
    student = accelerator.unwrap_model(model)
    optimizer = adamw(student, params.learning_rate, params.adam_betas, params.adam_epsilon, params.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

    # the data order: a resumed run must see the same batches (the trajectory parameters are checked on their own)
    run = dict(seed=params.seed, batch_size=params.batch_size, gradient_accumulation_steps=accum, world_size=world,
               n_sequences=len(lengths))
    log_path = output_dir / "log.jsonl"
    step, tokens_seen, elapsed, resumed_from = 0, 0, 0.0, None
    segments = [dict(start_step=0, params=trajectory_params(params))]
    checkpoint = find_checkpoint(output_dir) if params.resume else None
    if checkpoint is not None:
        state = load_state(checkpoint)
        changed = {k: (state["run"].get(k), v) for k, v in run.items() if state["run"].get(k) != v}
        if changed:
            raise ParameterError("resume", f"the checkpoint in {checkpoint} was made with another data order "
                                 f"(name: (checkpoint, now)) {changed}; set resume=false or use another run_dir")
        changed = resume_changes(state["params"], params, checkpoint)
        saved = type(student).from_pretrained(checkpoint / "student")
        student.load_state_dict(saved.state_dict())  # strict: same class, same names
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, tokens_seen, elapsed = state["step"], state["tokens"], state["elapsed_s"]
        resumed_from = step
        segments = state["segments"]
        if changed:  # allowed by resume_with_changes: the new values hold from this step on
            for group in optimizer.param_groups:  # load_state_dict restored the checkpoint's hyper-parameters
                group.update(betas=tuple(params.adam_betas), eps=params.adam_epsilon, initial_lr=params.learning_rate)
            optimizer.param_groups[0]["weight_decay"] = params.weight_decay
            # the new schedule (learning_rate, warmup_prop, total steps), positioned at this step: the lr of step s
            # is what a whole run with the new values would use at step s
            scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps, last_epoch=step - 1)
            segments = segments + [dict(start_step=step, params={k: v for k, (_, v) in changed.items()})]
            print(f"resuming from step {step} of {checkpoint} with changed parameters (checkpoint -> now): "
                  + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items())))

    def checkpoint_state():
        return dict(step=step, tokens=tokens_seen, elapsed_s=elapsed, run=run, params=trajectory_params(params),
                    segments=segments, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    scaler=scaler.state_dict())

    last_checkpoint, last_checkpoint_step = checkpoint, resumed_from
    window = dict(time=time.perf_counter(), steps=0, sums=torch.zeros(len(LOSS_TERMS), device=device),
                  counts=torch.zeros(3, device=device))  # non-padding tokens, positions, grad-norm sum
    last_record = None
    lock = _lock_run(accelerator, output_dir)
    bar = tqdm(total=total_steps, initial=step, desc="distill", disable=not (progress and main), dynamic_ncols=True)
    started = time.perf_counter() - elapsed
    try:
        if main:
            if resumed_from is None:
                clear_checkpoints(output_dir)  # starting over: older checkpoints here no longer count
            kept = [r for r in read_log(log_path) if r["step"] <= step] if resumed_from is not None else []
            log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        accelerator.wait_for_everyone()
        while step < total_steps:
            epoch, step_in_epoch = divmod(step, steps_per_epoch)
            batches = epoch_batches(epoch)[step_in_epoch * accum:steps_per_epoch * accum]
            loader = iter(DataLoader(dataset, batch_sampler=batches,
                                     collate_fn=partial(collate, pad_token_id=student.config.pad_token_id)))
            for _ in range(steps_per_epoch - step_in_epoch):
                if step >= total_steps:
                    break
                seed = _step_seed(params.seed, step, rank)
                torch.manual_seed(seed)  # dropout
                generator = torch.Generator().manual_seed(seed + 1)  # masking
                sums = torch.zeros(len(LOSS_TERMS), device=device)
                for micro in range(accum):
                    batch = next(loader)
                    input_ids, labels = mask_tokens(
                        batch["input_ids"], batch["attention_mask"], token_probs, tokenizer.mask_token_id, special_ids,
                        params.mlm_mask_prop, params.word_mask, params.word_keep, params.word_rand, generator)
                    attention_mask = batch["attention_mask"].to(device)
                    sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(model)
                    with sync:
                        losses = forward_losses(teacher, model, input_ids.to(device), attention_mask, labels.to(device),
                                                weights, layers, dtype)
                        scaler.scale(losses["loss"] / accum).backward()
                    sums += torch.stack([losses[k].detach() if losses[k] is not None else sums.new_zeros(())
                                         for k in LOSS_TERMS]) / accum
                    window["counts"][0] += attention_mask.sum()
                    window["counts"][1] += attention_mask.numel()
                bad = (~torch.isfinite(sums)).any().float()
                if world > 1:
                    bad = accelerator.reduce(bad, "sum")  # every process stops together
                if bad.item() > 0:
                    terms = {k: round(float(v), 4) for k, v in zip(LOSS_TERMS, sums)}
                    if main and last_checkpoint_step == step and last_checkpoint is not None:
                        # the newest checkpoint holds the very weights whose loss is non-finite: useless to resume
                        set_aside(last_checkpoint, f"set aside: its weights gave a non-finite loss at step {step + 1}")
                        try:
                            last_checkpoint = find_checkpoint(output_dir)
                        except CheckpointError:
                            last_checkpoint = None
                        last_checkpoint_step = None if last_checkpoint is None else load_state(last_checkpoint)["step"]
                    raise FloatingPointError(nan_advice(step + 1, terms, last_checkpoint, last_checkpoint_step,
                                                        params, dtype))
                grad_norm, lr = optimizer_step(optimizer, scheduler, scaler, model.parameters(), params.max_grad_norm)
                step += 1
                bar.update(1)
                window["sums"] += sums
                window["counts"][2] += grad_norm.float()
                window["steps"] += 1

                if step % params.log_every == 0 or step % params.checkpoint_every == 0 or step == total_steps:
                    sums_all = accelerator.reduce(window["sums"], "mean") if world > 1 else window["sums"]
                    counts_all = accelerator.reduce(window["counts"], "sum") if world > 1 else window["counts"]
                    now = time.perf_counter()
                    tokens_seen += int(counts_all[0])
                    n = window["steps"]
                    record = dict(step=step, epoch=round(step / steps_per_epoch, 4), lr=lr)
                    for name, value in zip(LOSS_TERMS, (sums_all / n).tolist()):
                        if name == "loss" or weights["alpha" + name[4:]] > 0:
                            record[name] = value
                    record.update(grad_norm=float(counts_all[2]) / n / world, tokens=tokens_seen,
                                  tokens_per_s=float(counts_all[0]) / (now - window["time"]),
                                  padding_share=1 - float(counts_all[0] / counts_all[1]),
                                  elapsed_s=round(now - started, 3))
                    if use_scaler:
                        record["grad_scale"] = scaler.get_scale()
                    window.update(time=now, steps=0)
                    window["sums"].zero_()
                    window["counts"].zero_()
                    last_record = record
                    if main:
                        with open(log_path, "a") as f:
                            f.write(json.dumps(record) + "\n")
                        bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
                        if on_log is not None:
                            on_log(record)

                if step % params.checkpoint_every == 0 or step == total_steps:
                    elapsed = time.perf_counter() - started
                    if main:
                        last_checkpoint = save_checkpoint(output_dir, student, tokenizer, checkpoint_state())
                    last_checkpoint_step = step
                    accelerator.wait_for_everyone()
        elapsed = time.perf_counter() - started
        if main:
            save_model(student, output_dir, tokenizer)  # output_dir itself is the model directory
        accelerator.wait_for_everyone()
    except KeyboardInterrupt:
        # the state of the last completed optimizer step; no barrier: other processes may already be gone
        if main and step != last_checkpoint_step:
            elapsed = time.perf_counter() - started
            tokens_seen += int(window["counts"][0]) * world  # not yet logged (exact on one process)
            slot = save_checkpoint(output_dir, student, tokenizer, checkpoint_state())
            print(f"interrupted: checkpoint of step {step} written to {slot}; run again to resume")
        raise
    finally:
        bar.close()
        if lock is not None:
            release_lock(lock)

    log = read_log(log_path)
    last_record = log[-1] if log else (last_record or {})
    return dict(steps=step, total_steps=total_steps, steps_per_epoch=steps_per_epoch, warmup_steps=warmup_steps,
                epochs=step / steps_per_epoch, tokens=tokens_seen, wall_time_s=elapsed,
                tokens_per_s=tokens_seen / elapsed if elapsed else None, resumed_from=resumed_from,
                precision=str(dtype).replace("torch.", ""), world_size=world,
                final={k: last_record[k] for k in LOSS_TERMS if k in last_record}, log=log,
                log_path=str(log_path), checkpoint=str(last_checkpoint) if last_checkpoint else None,
                segments=segments, output_dir=str(output_dir))


def weights_digest(model):
    """sha1 of a model's state dict (names and bytes): equal digests mean equal weights, e.g. on every DDP rank."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_distillation(params, teacher, dataset, tokenizer, counts=None, progress=True):
    """One distillation run of a stage: the student of ``params`` built from ``teacher``, distilled into
    run_dir/<run_name>, and results/<profile>/distill-<run_name>.json written (by the main process only: every
    process of a DDP run calls this and trains). counts: the corpus's token counts (lib.data.token_counts), to
    count once for several runs. Returns the summary of ``distill`` with weights_sha1, the final student's digest."""
    from accelerate import PartialState

    from lib import results
    started = time.perf_counter()
    token_probs = None if counts is None else mlm_token_probs(counts, params.mlm_smoothing, special_token_ids(tokenizer))
    student = build_student(teacher, layers=params.student_layers, n_layers=params.n_student_layers,
                            random_init=params.random_init)
    summary = distill(teacher, student, dataset, params, output_dir=params.path("run_dir") / params.run_name,
                      tokenizer=tokenizer, token_probs=token_probs, progress=progress)
    accum = accumulation_steps(params, summary["world_size"])
    summary.update(weights_sha1=weights_digest(student), gradient_accumulation_steps=accum,
                   effective_batch_size=params.batch_size * accum * summary["world_size"])
    state = PartialState()
    if state.is_main_process:
        record = results.write_result(
            params, "distill", time.perf_counter() - started, name=f"distill-{params.run_name}",
            teacher=params.teacher, student_dir=results.repo_relative(summary["output_dir"]),
            teacher_parameters=count_parameters(teacher), student_parameters=count_parameters(student),
            student_layers=getattr(student.config, "teacher_layers", None),
            **{k: summary[k] for k in ("steps", "total_steps", "steps_per_epoch", "warmup_steps", "epochs", "tokens",
                                       "tokens_per_s", "resumed_from", "precision", "world_size", "final", "segments",
                                       "weights_sha1", "gradient_accumulation_steps", "effective_batch_size")},
            log_path=results.repo_relative(summary["log_path"]), checkpoint=results.repo_relative(summary["checkpoint"]),
            loss_curve=[{k: r[k] for k in ("step", "tokens", *LOSS_TERMS) if k in r} for r in summary["log"]])
        path = params.path("results_dir") / f"{record.name}.json"
        print(f"[rank {state.process_index}] results written: {path}", flush=True)
    state.wait_for_everyone()
    return summary


def _mlm_batches(lengths, batch_size):
    """Every index once, in batches of similar lengths (evaluation order, deterministic)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def _uniform_probs(model, tokenizer):
    return mlm_token_probs(np.ones(model.config.vocab_size), 0.0, special_token_ids(tokenizer))


@torch.no_grad()
def evaluate_mlm(model, dataset, tokenizer, token_probs=None, batch_size=32, max_sequences=None, mlm_mask_prop=0.15,
                 word_mask=0.8, word_keep=0.1, word_rand=0.1, seed=0, precision="auto", device=None, progress=True):
    """Masked-token accuracy and perplexity (exp of the mean cross-entropy over masked targets) of a masked-LM
    on held-out sequences. Masks are drawn as in training (token_probs None: uniformly over non-special
    tokens) from a fixed seed, so two models evaluated on the same dataset see the same masks."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype, _ = select_precision(precision, device)
    if max_sequences is not None:
        dataset = dataset.select(range(min(max_sequences, len(dataset))))
    token_probs = _uniform_probs(model, tokenizer) if token_probs is None else token_probs
    special_ids = special_token_ids(tokenizer)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.to(device).eval()
    set_torch_threads(model)
    loss_sum, correct, n_targets = 0.0, 0, 0
    batches = _mlm_batches(sequence_lengths(dataset), batch_size)
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=partial(collate, pad_token_id=tokenizer.pad_token_id))
    for batch in tqdm(loader, desc="evaluate MLM", disable=not progress):
        input_ids, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], token_probs,
                                        tokenizer.mask_token_id, special_ids, mlm_mask_prop, word_mask, word_keep,
                                        word_rand, generator)
        with autocast(device, dtype):
            logits = model(input_ids=input_ids.to(device), attention_mask=batch["attention_mask"].to(device)).logits
        labels = labels.to(device)
        targets = labels != -100
        logits, labels = logits[targets].float(), labels[targets]
        loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(-1) == labels).sum())
        n_targets += int(labels.numel())
    model.train(was_training)
    if n_targets == 0:
        raise ValueError("no masked targets: the evaluation dataset is empty")
    return dict(mlm_accuracy=correct / n_targets, perplexity=math.exp(loss_sum / n_targets),
                loss=loss_sum / n_targets, n_tokens=n_targets, n_sequences=len(dataset))


def train_mlm_head(teacher, dataset, tokenizer, steps, top_layers=0, learning_rate=1e-4, batch_size=32,
                   token_probs=None, mlm_mask_prop=0.15, word_mask=0.8, word_keep=0.1, word_rand=0.1,
                   warmup_prop=0.05, weight_decay=0.0, max_grad_norm=1.0, precision="auto", seed=56, device=None,
                   log_every=10, progress=True):
    """Adapt a BertForMaskedLM teacher to the corpus: train its MLM head (transform and output bias; the output
    matrix is tied to the word embeddings and stays fixed) and, with top_layers > 0, its top encoder layers, by
    plain masked-LM for ``steps`` optimizer steps. Everything else stays frozen. Returns dict(log, ...)."""
    if steps <= 0:
        raise ParameterError("adapt_steps", f"must be > 0 to adapt the MLM head, got {steps}")
    n_layers = teacher.config.num_hidden_layers
    if not 0 <= top_layers <= n_layers:
        raise ParameterError("adapt_top_layers", f"must be in 0..{n_layers}, got {top_layers}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype, use_scaler = select_precision(precision, device)
    token_probs = _uniform_probs(teacher, tokenizer) if token_probs is None else token_probs
    special_ids = special_token_ids(tokenizer)

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
    bar = tqdm(total=steps, desc="adapt MLM head", disable=not progress)
    try:
        while step < steps:
            for batch in DataLoader(dataset, batch_sampler=length_grouped_batches(lengths, batch_size, seed + epoch),
                                    collate_fn=collate_fn):
                input_ids, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], token_probs,
                                                tokenizer.mask_token_id, special_ids, mlm_mask_prop, word_mask,
                                                word_keep, word_rand, generator)
                with autocast(device, dtype):
                    logits = teacher(input_ids=input_ids.to(device),
                                     attention_mask=batch["attention_mask"].to(device)).logits
                labels = labels.to(device)
                targets = labels != -100
                loss = torch.nn.functional.cross_entropy(logits[targets].float(), labels[targets])
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
                if step >= steps:
                    break
            epoch += 1
    finally:
        bar.close()
        for name, p in teacher.named_parameters():
            p.requires_grad_(flags[name])
        teacher.eval()
    return dict(log=log, steps=step, wall_time_s=time.perf_counter() - started,
                trainable_parameters=sum(p.numel() for p in trainable), top_layers=top_layers)


def estimate_memory(teacher_config, student_config, batch_size, seq_length, precision="fp16", gpu_gib=16.0):
    """Rough GPU memory (GiB) of one distillation micro-batch: the fp32 teacher, the fp32 student with its
    gradients and two AdamW moments, autocast's half-precision weight copies, the student's saved activations
    (~34 bytes per token and hidden unit per layer in half precision with fused attention, Korthikanti et al.
    2022; twice that in fp32), the teacher's kept hidden states, and the logits (~36 bytes per position and
    vocabulary entry across the float32 copies, softmaxes and gradients of the loss, as measured (issue 11: 36
    against the 32 first assumed, which left the total ~15% low); 40 in fp32, where one CPU step with a 62.5M-entry
    logit tensor measured ~36). `make gpu-check` re-measures the peak of a t4 step. Default: a 16 GB T4."""
    if precision not in ("fp16", "bf16", "fp32"):
        raise ParameterError("precision", f"estimate for fp16, bf16 or fp32, got {precision!r}")
    half = precision != "fp32"
    gib = 2 ** 30

    def n_params(hidden, ffn, layers, vocab, positions, types=0):
        per_layer = 4 * hidden * hidden + 2 * hidden * ffn + 9 * hidden + ffn
        head = hidden * hidden + 3 * hidden + vocab
        return (vocab + positions + types) * hidden + 2 * hidden + layers * per_layer + head

    tc, sc = teacher_config, student_config
    p_teacher = n_params(tc.hidden_size, tc.intermediate_size, tc.num_hidden_layers, tc.vocab_size,
                         tc.max_position_embeddings, tc.type_vocab_size)
    p_student = n_params(sc.dim, sc.hidden_dim, sc.n_layers, sc.vocab_size, sc.max_position_embeddings)
    tokens = batch_size * seq_length
    act_bytes = 2 if half else 4
    parts = {
        "teacher weights": 4 * p_teacher,
        "student weights": 4 * p_student,
        "student gradients": 4 * p_student,
        "AdamW moments": 8 * p_student,
        "autocast weight copies": 2 * p_student if half else 0,
        "student activations": sc.n_layers * tokens * sc.dim * 17 * act_bytes,
        "teacher hidden states": (tc.num_hidden_layers + 1) * tokens * tc.hidden_size * act_bytes,
        "logits and loss": tokens * sc.vocab_size * (36 if half else 40),  # 36: measured (issue 11), not 32
    }
    parts = {k: v / gib for k, v in parts.items()}
    total = sum(parts.values())
    return dict(parts=parts, total_gib=total, gpu_gib=gpu_gib, fits=total < 0.9 * gpu_gib,
                teacher_parameters=p_teacher, student_parameters=p_student, batch_size=batch_size,
                seq_length=seq_length, precision=precision)
