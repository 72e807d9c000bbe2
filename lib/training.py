"""The distillation loop: ``distill``, in the authors' pieces without their class: a masking spec built once
(``MaskingSpec``), ``prepare_batch``, ``train_step`` (their step: forward and backward of one optimizer step's
micro-batches) and ``optimizer_step`` (their optimize), with a ``LogWindow`` summed between log records. The loop
(``_distill``) reads top to bottom; its fixed parts are a ``Run``, what changes a ``RunState``, and resume, NaN
stop, held-out evaluation, logging and checkpoints are named functions around it. The forward passes
(``teacher_forward``, ``student_forward``) compute what the loss terms in use need (lib.losses.needed_outputs).
Also the precision choice, the resume checks and ``estimate_memory``. (The teacher's MLM-head adaptation and
masked-LM evaluation are in lib.teacher; a stage's runs, results files and ablations in lib.distill.)
Over 400 lines because the loop, its resume and checkpoint checks and its precision choice are one unit that the
resume, precision and DDP tests exercise together.

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
import typing
import warnings
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from lib.checkpoints import (SLOTS, CheckpointError, acquire_lock, clear_checkpoints, find_checkpoint, holds_lock,
                             load_state, read_manifest, release_lock, save_checkpoint, set_aside, signals_deferred,
                             signals_interrupt)
from lib.config import PRECISIONS, ParameterError
from lib.data import (collate, length_grouped_batches, mask_tokens, mlm_token_probs, sequence_lengths,
                      special_token_ids, token_counts)
from lib import losses
from lib.losses import distillation_loss, logit_rows
from lib.models import save_model, set_torch_threads
from lib.models import layer_map as make_layer_map

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


# where a masked-LM head starts, by model family: BERT (cls), RoBERTa and most others (lm_head), DistilBERT
HEADS = ("cls", "lm_head", "vocab_transform")


@contextlib.contextmanager
def head_rows(model, rows):
    """Within the block, ``model``'s masked-LM head takes the positions ``rows`` ((batch, seq) bool) only: a pre-hook
    on the head's first module selects them, so that the model's own forward still runs (through a
    DistributedDataParallel wrapper too, which syncs the gradients). A head of another name takes every position
    (the loss then selects the rows: slower, same values)."""
    model = getattr(model, "module", model)
    head = next((getattr(model, name) for name in HEADS if isinstance(getattr(model, name, None), torch.nn.Module)),
                None)
    handle = None if head is None else head.register_forward_pre_hook(lambda module, args: (args[0][rows],))
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def vocab_projection(model):
    """The nn.Linear that projects ``model``'s masked-LM head onto the vocabulary (its output embeddings; the
    weight tied to the word embeddings), or None."""
    model = getattr(model, "module", model)
    get = getattr(model, "get_output_embeddings", None)
    decoder = get() if get is not None else None
    return decoder if isinstance(decoder, torch.nn.Linear) else None


@contextlib.contextmanager
def projection_skipped(model, skip=True):
    """Within the block, ``model``'s vocabulary projection takes no row: a pre-hook keeps its input and passes it on
    with its rows cut to none, so the model's logits come out empty and cost nothing. Yields a list that receives
    the projection as a lib.losses.VocabHead (input, weight, bias), whose logits the loss computes chunk by chunk
    (lib.losses.fused_head_losses). The model's own forward still runs, so DDP still syncs every gradient."""
    kept = []
    decoder = vocab_projection(model) if skip else None
    if decoder is None:
        yield kept
        return

    def keep_input(module, args):
        kept.append(losses.VocabHead(args[0], module.weight, module.bias))
        return (args[0][..., :0, :],)

    handle = decoder.register_forward_pre_hook(keep_input)
    try:
        yield kept
    finally:
        handle.remove()


def _with_head(out, kept):
    """A model output whose logits are the kept VocabHead, when its projection was skipped."""
    if not kept:
        return out
    return SimpleNamespace(logits=kept[-1], hidden_states=getattr(out, "hidden_states", None))


def teacher_forward(teacher, input_ids, attention_mask, rows, needs, dtype=torch.float32, fused=False):
    """The teacher's outputs that the loss terms in use read (``needs``: lib.losses.needed_outputs), in inference
    mode: its logits for ``rows`` only, its hidden states when asked; it does not run when no term reads it.
    fused: its logits as a VocabHead (projection_skipped), for the fused loss to compute."""
    if not needs & {"teacher logits", "teacher hidden"}:
        return SimpleNamespace(logits=None, hidden_states=None)
    if "teacher logits" not in needs:
        rows, fused = torch.zeros_like(rows), False  # hidden states only: the head takes no row
    with torch.inference_mode(), autocast(input_ids.device, dtype), head_rows(teacher, rows), \
            projection_skipped(teacher, fused) as kept:
        out = teacher(input_ids=input_ids, attention_mask=attention_mask,
                      output_hidden_states="teacher hidden" in needs)
    return _with_head(out, kept)


def student_forward(student, input_ids, attention_mask, rows, needs, dtype=torch.float32, fused=False):
    """The student's forward pass, its logits for ``rows`` only: the vocabulary projection is the largest matmul of
    a step, and its logits the largest tensors. fused: its logits as a VocabHead (projection_skipped)."""
    with autocast(input_ids.device, dtype), head_rows(student, rows), projection_skipped(student, fused) as kept:
        out = student(input_ids=input_ids, attention_mask=attention_mask,
                      output_hidden_states="student hidden" in needs)
    return _with_head(out, kept)


def fused_head(teacher, student, settings, dtype):
    """Whether the step's L_ce and L_mlm come from the fused head (lib.losses.fused_head_losses): in float32 (under
    autocast the logits' precision is autocast's), when no other term reads the logits, for models whose
    vocabulary projection is an nn.Linear."""
    needs = losses.needed_outputs(settings)
    return (dtype == torch.float32 and "student logits" in needs and losses.fusable(settings)
            and vocab_projection(student) is not None
            and ("teacher logits" not in needs or vocab_projection(teacher) is not None))


def forward_losses(teacher, student, input_ids, attention_mask, labels, weights, layer_map=None,
                   dtype=torch.float32):
    """Teacher and student forward passes on the same masked batch, and the loss terms (lib.losses). ``weights``:
    loss settings (lib.losses.loss_settings; missing ones take the terms' defaults). The models' heads run on the
    rows some term uses only (logit_rows: padding never, the masked tokens only for L_mlm alone); in float32 the
    vocabulary projection, L_ce and L_mlm are one chunked pass (fused_head), never materialising the logits."""
    settings = losses.loss_settings(**weights)
    needs = losses.needed_outputs(settings)
    rows = logit_rows(attention_mask, labels, **settings)
    fused = fused_head(teacher, student, settings, dtype)
    teacher_out = teacher_forward(teacher, input_ids, attention_mask, rows, needs, dtype, fused)
    student_out = student_forward(student, input_ids, attention_mask, rows, needs, dtype, fused)
    return distillation_loss(student_out, teacher_out, attention_mask, labels, layer_map=layer_map, **settings)


def adamw(model, learning_rate, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0):
    """AdamW with no weight decay on biases and LayerNorm weights (as the authors grouped them). The fused
    implementation (one kernel per parameter; the same update) where torch has it: on 2 CPU cores the plain one's
    dozen passes per parameter took ~4x as long (issue 23)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in FUSED_ADAMW_DTYPES for p in params) or None
    return torch.optim.AdamW(groups, lr=learning_rate, betas=tuple(betas), eps=eps, fused=fused)


FUSED_ADAMW_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _step_seed(seed, step, rank):
    """Seed of one optimizer step on one process: resumed runs draw the same masks and dropout."""
    return ((seed * 1_000_003 + step) * 1_009 + rank) % 2 ** 62


def read_log(path):
    """The per-step log (JSON lines: log.jsonl, heldout.jsonl) as a list of dicts. A torn last line -- the run was
    killed inside its append, the one write that can tear -- is dropped with a notice (a resume then rewrites the
    file without it). A damaged line before the last is an error naming the file and the line: no interrupted append
    makes one, so something else changed the file, and skipping it would leave a hole in the curve unnoticed."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = [(number, line) for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    records = []
    for number, line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number != lines[-1][0]:
                raise ValueError(f"{path}, line {number}: not a JSON record ({err}); only the last line can be torn "
                                 "by an interrupted run. Repair or delete that line, then run again") from None
            print(f"{path}: line {number} is torn (the run stopped while writing it); dropped")
    return records


# DistillParams fields that do not shape the trajectory (folders, names, bookkeeping)
BOOKKEEPING = {"profile", "mirror", "run_dir", "results_dir", "run_name", "checkpoint_every", "resume",
               "resume_with_changes", "log_every", "undistilled_name", "ablations", "eval_every"}
# of the rest, the ones a resumed run cannot change at all: the data order and the student's shape
FIXED_ON_RESUME = {"seed", "batch_size", "gradient_accumulation_steps", "effective_batch_size", "corpus", "max_length", "min_length",
                   "teacher", "student_layers", "n_student_layers", "random_init", "heldout_sequences"}


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


def on_main_or_stop_all(state, action):
    """``action()`` on the main process (its result there, None elsewhere); when it raises, every process stops:
    the main one with its error, the others with a RuntimeError of the same message (an accelerate
    Accelerator or PartialState)."""
    result, error = None, None
    if state.is_main_process:
        try:
            result = action()
        except (ParameterError, CheckpointError) as err:
            error = err
    message = None if error is None else str(error)
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        message = broadcast_object_list([message])[0]
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(message)
    return result


@contextlib.contextmanager
def _lock_run(accelerator, output_dir):
    """The main process holds output_dir's run lock for the ``with`` block (unless its stage holds it already:
    lib.distill.run locks every folder it writes before it starts); a refusal stops every process."""
    take = accelerator.is_main_process and not holds_lock(output_dir)
    lock = on_main_or_stop_all(accelerator, lambda: acquire_lock(output_dir) if take else None)
    try:
        yield lock
    finally:
        if lock is not None:
            release_lock(lock)


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


class StepPlan(typing.NamedTuple):
    micro_per_epoch: int   # micro-batches each process takes per epoch
    accum: int             # micro-batches per optimizer step on each process
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def plan_steps(params, n_sequences, world):
    """How many micro-batches, optimizer steps and warmup steps a run of ``params`` takes on ``world`` processes."""
    n_batches = n_sequences // params.batch_size
    micro_per_epoch = n_batches // world
    accum = accumulation_steps(params, world)
    steps_per_epoch = micro_per_epoch // accum
    if steps_per_epoch == 0:  # blame the knob that made one step too big for the corpus
        culprit = "gradient_accumulation_steps" if n_batches >= world and accum > 1 else "batch_size"
        if culprit == "gradient_accumulation_steps" and params.effective_batch_size:
            culprit = "effective_batch_size"  # accumulation was derived from it
        raise ParameterError(culprit, f"the corpus has {n_sequences} sequences (parameter 'corpus'), fewer than one "
                             f"optimizer step needs: batch_size {params.batch_size} x {accum} accumulation x {world} "
                             "processes; give a bigger corpus or a smaller step")
    total_steps = params.max_steps or steps_per_epoch * params.n_epoch
    return StepPlan(micro_per_epoch, accum, steps_per_epoch, total_steps, math.ceil(params.warmup_prop * total_steps))


@dataclasses.dataclass
class MaskingSpec:
    """How every batch of a run is masked (built once): targets drawn with token_probs, never special_ids; each
    becomes mask_token_id (word_mask), stays (word_keep) or a random token (word_rand). See lib.data.mask_tokens."""
    token_probs: torch.Tensor
    mask_token_id: int
    special_ids: list
    mlm_mask_prop: float = 0.15
    word_mask: float = 0.8
    word_keep: float = 0.1
    word_rand: float = 0.1

    def apply(self, batch, generator):
        """(masked input_ids, labels) of a collated batch (CPU tensors)."""
        return mask_tokens(batch["input_ids"], batch["attention_mask"], self.token_probs, self.mask_token_id,
                           self.special_ids, self.mlm_mask_prop, self.word_mask, self.word_keep, self.word_rand,
                           generator)


def masking_spec(params, tokenizer, token_probs):
    """The MaskingSpec of a DistillParams run."""
    return MaskingSpec(token_probs, tokenizer.mask_token_id, special_token_ids(tokenizer), params.mlm_mask_prop,
                       params.word_mask, params.word_keep, params.word_rand)


@dataclasses.dataclass
class LogWindow:
    """What this process summed over the optimizer steps since the last log record."""
    started: float           # time.perf_counter() at the window's start
    losses: torch.Tensor     # each of lib.losses.log_fields(), the steps' means summed
    tokens: torch.Tensor     # non-padding tokens
    positions: torch.Tensor  # token positions, padding included
    grad_norm: torch.Tensor  # the steps' gradient norms summed
    steps: int = 0

    @staticmethod
    def empty(device, now):
        return LogWindow(now, torch.zeros(len(losses.log_fields()), device=device), torch.zeros((), device=device),
                         torch.zeros((), device=device), torch.zeros((), device=device))

    def add(self, sums, grad_norm, tokens, positions):
        self.losses += sums
        self.grad_norm += grad_norm.float()
        self.tokens += tokens
        self.positions += positions
        self.steps += 1

    def saved(self, now):
        """The window as checkpoint state (an interrupt's checkpoint falls between two log records)."""
        return dict(seconds=now - self.started, losses=self.losses.cpu(), tokens=self.tokens.cpu(),
                    positions=self.positions.cpu(), grad_norm=self.grad_norm.cpu(), steps=self.steps)

    @staticmethod
    def restore(saved, device, now):
        return LogWindow(now - saved["seconds"], *(saved[k].to(device) for k in ("losses", "tokens", "positions",
                                                                                  "grad_norm")), saved["steps"])


def log_record(window, accelerator, weights, step, epoch, lr, tokens_seen, elapsed_s, now):
    """A log record of ``window``'s steps, all processes together (losses averaged, counts summed); returns
    (record, tokens the window saw on all processes)."""
    world = accelerator.num_processes
    means = accelerator.reduce(window.losses, "mean") if world > 1 else window.losses
    counts = torch.stack([window.tokens, window.positions, window.grad_norm])
    tokens, positions, grad_norm = accelerator.reduce(counts, "sum") if world > 1 else counts
    tokens_seen += int(tokens)
    record = dict(step=step, epoch=epoch, lr=lr)
    for name, value in zip(losses.log_fields(), (means / window.steps).tolist()):
        if name == "loss" or weights[losses.weight_name(name)] > 0:  # "loss", the total, always
            record[name] = value
    record.update(grad_norm=float(grad_norm) / window.steps / world, tokens=tokens_seen,
                  tokens_per_s=float(tokens) / (now - window.started), padding_share=1 - float(tokens / positions),
                  elapsed_s=elapsed_s)
    return record, tokens_seen


def prepare_batch(batch, masking, generator, device):
    """The authors' prepare_batch: a collated batch masked; (input_ids, attention_mask, labels) on ``device``."""
    input_ids, labels = masking.apply(batch, generator)
    return input_ids.to(device), batch["attention_mask"].to(device), labels.to(device)


def train_step(micro_batches, teacher, model, masking, weights, layers, dtype, scaler, accelerator, generator):
    """The authors' step for one optimizer step: forward and backward of each of its micro-batches (gradients
    synchronised across processes on the last one only). Returns the loss terms averaged over the micro-batches
    (lib.losses.log_fields() order; 0 for a term that is off), their non-padding tokens and their token positions."""
    device = model.device if hasattr(model, "device") else next(model.parameters()).device
    fields = losses.log_fields()
    sums = torch.zeros(len(fields), device=device)
    tokens = positions = 0
    for micro, batch in enumerate(micro_batches):
        input_ids, attention_mask, labels = prepare_batch(batch, masking, generator, device)
        last = micro == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            terms = forward_losses(teacher, model, input_ids, attention_mask, labels, weights, layers, dtype)
            scaler.scale(terms["loss"] / len(micro_batches)).backward()
        sums += torch.stack([terms[k].detach() if terms[k] is not None else sums.new_zeros(())
                             for k in fields]) / len(micro_batches)
        tokens, positions = tokens + attention_mask.sum(), positions + attention_mask.numel()
    return sums, tokens, positions


def _stop_non_finite(sums, step, output_dir, last_checkpoint, last_checkpoint_step, main, params, dtype):
    """Raise the FloatingPointError of a non-finite loss at optimizer step step + 1, naming the checkpoint to resume
    from; the newest one is set aside first when it holds the very weights that gave the non-finite loss."""
    terms = {k: round(float(v), 4) for k, v in zip(losses.log_fields(), sums)}
    if main and last_checkpoint_step == step and last_checkpoint is not None:
        set_aside(last_checkpoint, f"set aside: its weights gave a non-finite loss at step {step + 1}")
        try:
            last_checkpoint = find_checkpoint(output_dir)
        except CheckpointError:
            last_checkpoint = None
        last_checkpoint_step = None if last_checkpoint is None else load_state(last_checkpoint)["step"]
    raise FloatingPointError(nan_advice(step + 1, terms, last_checkpoint, last_checkpoint_step, params, dtype))


def _resume(checkpoint, run, params, student, optimizer, scheduler, scaler, plan, main):
    """Load a checkpoint's state into the run (refusing another data order, and trajectory changes unless
    params.resume_with_changes; the main process names the changes); returns (step, tokens seen, elapsed s,
    segments, scheduler)."""
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
    step, segments = state["step"], state["segments"]
    if changed:  # allowed by resume_with_changes: the new values hold from this step on
        for group in optimizer.param_groups:  # load_state_dict restored the checkpoint's hyper-parameters
            group.update(betas=tuple(params.adam_betas), eps=params.adam_epsilon, initial_lr=params.learning_rate)
        optimizer.param_groups[0]["weight_decay"] = params.weight_decay
        # the new schedule (learning_rate, warmup_prop, total steps), positioned at this step: the lr of step s
        # is what a whole run with the new values would use at step s
        scheduler = get_linear_schedule_with_warmup(optimizer, plan.warmup_steps, plan.total_steps, last_epoch=step - 1)
        segments = segments + [dict(start_step=step, params={k: v for k, (_, v) in changed.items()})]
        if main:  # once, not once per process
            print(f"resuming from step {step} of {checkpoint} with changed parameters (checkpoint -> now): "
                  + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items())))
    return step, state["tokens"], state["elapsed_s"], segments, scheduler, state.get("window")


def say_how_it_starts(output_dir, checkpoint, step, total_steps, resume):
    """One line when a run resumes (the step, the checkpoint, how old it is) or starts over on a checkpoint."""
    if checkpoint is not None:
        written = (read_manifest(checkpoint) or {}).get("written")
        age = _age(written)
        print(f"resuming {output_dir.name} from step {step:,} of {total_steps:,}: checkpoint {checkpoint}, written "
              f"{written}{f' ({age} ago)' if age else ''}", flush=True)
    elif not resume and any(read_manifest(output_dir / slot) for slot in SLOTS):
        print(f"resume=false: starting {output_dir.name} over at step 0; its checkpoints in {output_dir} no longer "
              "count and will be overwritten", flush=True)


def _age(written):
    """'3 h 12 min' since a manifest's time stamp, or None when it cannot be read."""
    try:
        seconds = time.time() - time.mktime(time.strptime(written, "%Y-%m-%dT%H:%M:%S%z"))
    except (TypeError, ValueError):
        return None
    hours, minutes = divmod(int(max(seconds, 0)) // 60, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min" if minutes else f"{int(max(seconds, 0))} s"


def accept_resume(params, output_dir, world_size):
    """Before the stage loads or writes anything: the checkpoint a run of ``params`` would resume from (None when
    it starts over), refusing here, in seconds, what ``distill`` would refuse later: no usable checkpoint, another
    process count, or changed trajectory parameters (resume_changes)."""
    if not params.resume:
        return None
    with warnings.catch_warnings():  # distill names a damaged slot when it resumes; once is enough
        warnings.simplefilter("ignore")
        checkpoint = find_checkpoint(output_dir)
    if checkpoint is None:
        return None
    state = load_state(checkpoint)
    saved_world = state["run"].get("world_size")
    if saved_world != world_size:
        raise ParameterError("resume", f"the checkpoint in {checkpoint} was made by {saved_world} process(es), this "
                             f"run has {world_size}: the batch order differs. Run it with {saved_world}, or set "
                             "resume=false or use another run_dir")
    resume_changes(state["params"], params, checkpoint)
    return checkpoint


def distill(teacher, student, dataset, params, output_dir, tokenizer, token_probs=None, progress=True, on_log=None,
            device=None, evaluate=None):
    """Distil ``teacher`` into ``student`` on ``dataset`` (input_ids [+ length] rows, see lib.data.tokenize_corpus)
    with the hyper-parameters of ``params`` (a DistillParams).

    output_dir becomes the final student's model directory (save_pretrained of model and tokenizer, loadable with
    AutoModelForMaskedLM) and also holds log.jsonl (a record every params.log_every optimizer steps) and
    two checkpoint slots, checkpoint-a/ and checkpoint-b/ (lib.checkpoints: every params.checkpoint_every steps, at the
    end and on KeyboardInterrupt; a resume verifies them and refuses changed trajectory parameters unless
    params.resume_with_changes), and run.lock while it runs (one run per folder). token_probs: masking
    weights (default: from the dataset's token counts with params.mlm_smoothing). on_log: called with each log
    record. device: "cpu" forces the CPU; default: CUDA when available. evaluate: a function of the (unwrapped)
    student returning a dict of held-out measures (lib.distill.heldout_evaluator), called by the main process alone
    (the others wait) before the first step (when params.eval_every > 0), every params.eval_every optimizer steps and
    at the end; each result, with step and tokens seen, is appended to output_dir/heldout.jsonl (kept on resume like
    the log). It must leave the trajectory alone: its masks come from a generator of its own, the student is
    evaluated without dropout and put back in train mode, and each step reseeds the global RNG anyway.
    Returns a summary dict (steps, tokens, wall_time_s: training seconds over all segments, earlier_wall_time_s:
    those before this call's resume, final losses, log: the list of log records, heldout_curve:
    the held-out records, output_dir, ...).
    """
    output_dir = Path(output_dir).expanduser()
    heads_unused = "student logits" not in losses.needed_outputs(losses.loss_settings(params))
    # mixed_precision="no": autocast is ours (params.precision); else ACCELERATE_MIXED_PRECISION from a launcher or
    # `accelerate config` would wrap the student's forward in another autocast, whatever the stage asked for
    accelerator = Accelerator(cpu=device == "cpu" or not torch.cuda.is_available(), mixed_precision="no",
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=heads_unused)])
    with _lock_run(accelerator, output_dir), signals_interrupt():  # the lock first: nothing is read or written before
        return _distill(accelerator, teacher, student, dataset, params, output_dir, tokenizer, token_probs, progress,
                        on_log, evaluate)


@dataclasses.dataclass
class Run:
    """What a run holds fixed from its first step to its last (``_prepare``)."""
    accelerator: Accelerator
    params: typing.Any            # the DistillParams
    output_dir: Path
    tokenizer: typing.Any
    dataset: typing.Any
    teacher: torch.nn.Module
    model: torch.nn.Module        # the student as trained: DDP-wrapped in a distributed run
    student: torch.nn.Module      # the same student unwrapped: saved and evaluated
    optimizer: torch.optim.Optimizer
    scheduler: typing.Any         # a resume with changed parameters replaces it
    scaler: torch.amp.GradScaler
    settings: dict                # the loss terms' weights and options (lib.losses.loss_settings)
    masking: MaskingSpec
    layers: list | None           # L_cos's (student, teacher) layer pairs
    dtype: torch.dtype            # autocast's
    plan: StepPlan
    lengths: list                 # every sequence's length: the batches' order derives from them
    order: dict                   # what fixes the data order; a resumed run must have the same

    @property
    def main(self):
        return self.accelerator.is_main_process

    @property
    def log_path(self):
        return self.output_dir / "log.jsonl"

    @property
    def heldout_path(self):
        return self.output_dir / "heldout.jsonl"


@dataclasses.dataclass
class RunState:
    """What changes as a run goes; a checkpoint holds step, tokens_seen, elapsed and segments (and the
    optimizer's state), an interrupt's checkpoint the window too."""
    segments: list                # [{start_step, params}]: a resume with changed parameters adds one
    window: LogWindow             # the steps since the last log record
    started: float = 0.0          # time.perf_counter() of a virtual start: now - started = training seconds
    step: int = 0                 # optimizer steps done
    tokens_seen: int = 0          # non-padding tokens of the logged steps, all processes
    elapsed: float = 0.0          # training seconds (evaluations left out) at the last checkpoint
    earlier_elapsed: float = 0.0  # the training seconds of the segments before a resume
    resumed_from: int | None = None
    checkpoint: Path | None = None        # the last checkpoint written or resumed from, and its step
    checkpoint_step: int | None = None
    last_record: dict | None = None

    def pause(self, seconds):
        """Leave ``seconds`` (a held-out evaluation) out of the training's time and the log window's."""
        self.started += seconds
        self.window.started += seconds


def _prepare(accelerator, teacher, student, dataset, params, output_dir, tokenizer, token_probs, progress):
    """The fixed parts of a run: precision, the loss terms' settings (checked against the models), masking, the
    step plan, the student wrapped for DDP, its optimizer, schedule and grad scaler."""
    device, world = accelerator.device, accelerator.num_processes
    dtype, use_scaler = select_precision(params.precision, device)
    settings = losses.loss_settings(params)
    losses.check_models(settings, student, teacher)
    if token_probs is None:
        counts = token_counts(dataset, student.config.vocab_size, progress=progress and accelerator.is_main_process)
        token_probs = mlm_token_probs(counts, params.mlm_smoothing, special_token_ids(tokenizer))
    masking = masking_spec(params, tokenizer, token_probs)
    layers = make_layer_map(student, params.cos_layers)
    lengths = sequence_lengths(dataset)
    plan = plan_steps(params, len(lengths), world)
    teacher.to(device).eval()
    set_torch_threads(teacher)  # one thread for tiny models: robust on a busy machine
    student.train()
    model = accelerator.prepare_model(student)
    student = accelerator.unwrap_model(model)
    optimizer = adamw(student, params.learning_rate, params.adam_betas, params.adam_epsilon, params.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, plan.warmup_steps, plan.total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    # the data order: a resumed run must see the same batches (the trajectory parameters are checked on their own)
    order = dict(seed=params.seed, batch_size=params.batch_size, gradient_accumulation_steps=plan.accum,
                 world_size=world, n_sequences=len(lengths))
    return Run(accelerator, params, output_dir, tokenizer, dataset, teacher, model, student, optimizer, scheduler,
               scaler, settings, masking, layers, dtype, plan, lengths, order)


def _start(run):
    """The state the run starts from: step 0, or its checkpoint's (params.resume); the main process says which."""
    params, device = run.params, run.accelerator.device
    state = RunState(segments=[dict(start_step=0, params=trajectory_params(params))],
                     window=LogWindow.empty(device, time.perf_counter()))
    checkpoint = find_checkpoint(run.output_dir) if params.resume else None
    if checkpoint is not None:
        state.step, state.tokens_seen, state.elapsed, state.segments, run.scheduler, saved_window = _resume(
            checkpoint, run.order, params, run.student, run.optimizer, run.scheduler, run.scaler, run.plan, run.main)
        state.resumed_from, state.checkpoint, state.checkpoint_step = state.step, checkpoint, state.step
        state.earlier_elapsed = state.elapsed
        if saved_window is not None:  # an interrupt's checkpoint: its unlogged steps go into the next record
            state.window = LogWindow.restore(saved_window, device, time.perf_counter())
    if run.main:
        say_how_it_starts(run.output_dir, checkpoint, state.step, run.plan.total_steps, params.resume)
    return state


def _start_logs(run, state):
    """A new run clears its folder's checkpoints and logs; a resumed one keeps the log records up to its step."""
    if run.main:
        if state.resumed_from is None:
            clear_checkpoints(run.output_dir)  # starting over: older checkpoints here no longer count
        for path in (run.log_path, run.heldout_path):
            kept = [r for r in read_log(path) if r["step"] <= state.step] if state.resumed_from is not None else []
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    run.accelerator.wait_for_everyone()


def _step_batches(run, step):
    """The micro-batches of each optimizer step from ``step`` on. The batch order is a function of (seed, epoch);
    each process takes every world-th micro-batch of it."""
    plan, rank, world = run.plan, run.accelerator.process_index, run.accelerator.num_processes
    collate_batch = partial(collate, pad_token_id=run.student.config.pad_token_id)
    while step < plan.total_steps:
        epoch, step_in_epoch = divmod(step, plan.steps_per_epoch)
        order = length_grouped_batches(run.lengths, run.params.batch_size, run.params.seed + epoch)
        batches = order[rank:plan.micro_per_epoch * world:world]
        loader = iter(DataLoader(run.dataset, batch_sampler=batches[step_in_epoch * plan.accum:
                                                                   plan.steps_per_epoch * plan.accum],
                                 collate_fn=collate_batch))
        for _ in range(plan.steps_per_epoch - step_in_epoch):
            if step >= plan.total_steps:
                return
            yield [next(loader) for _ in range(plan.accum)]
            step += 1


def _seed_step(run, step):
    """Seed this process's dropout (the global RNG) for optimizer step ``step``; returns its masking generator."""
    seed = _step_seed(run.params.seed, step, run.accelerator.process_index)
    torch.manual_seed(seed)  # dropout
    return torch.Generator().manual_seed(seed + 1)  # masking


def _check_finite(run, state, sums):
    """The NaN policy: a non-finite loss on any process stops every process before the optimizer steps."""
    bad = (~torch.isfinite(sums)).any().float()
    if run.accelerator.num_processes > 1:
        bad = run.accelerator.reduce(bad, "sum")  # every process stops together
    if bad.item() > 0:
        _stop_non_finite(sums, state.step, run.output_dir, state.checkpoint, state.checkpoint_step, run.main,
                         run.params, run.dtype)


def _log(run, state, lr, bar, on_log):
    """Close the log window: its record, all processes together, appended to log.jsonl by the main process."""
    now = time.perf_counter()
    record, state.tokens_seen = log_record(state.window, run.accelerator, run.settings, state.step,
                                           round(state.step / run.plan.steps_per_epoch, 4), lr, state.tokens_seen,
                                           round(now - state.started, 3), now)
    if run.scaler.is_enabled():
        record["grad_scale"] = run.scaler.get_scale()
    state.window, state.last_record = LogWindow.empty(run.accelerator.device, now), record
    if run.main:
        with open(run.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
        if on_log is not None:
            on_log(record)


def _evaluate_heldout(run, state, evaluate):
    """Evaluate (main process) into heldout.jsonl, and return the seconds it took: they are left out of the
    training's time."""
    began = time.perf_counter()
    if run.main:
        record = dict(step=state.step, tokens=state.tokens_seen, **evaluate(run.student))
        record["seconds"] = round(time.perf_counter() - began, 3)
        with open(run.heldout_path, "a") as f:
            f.write(json.dumps(record) + "\n")
    run.accelerator.wait_for_everyone()
    return time.perf_counter() - began


def _checkpoint_state(run, state, window=None):
    return dict(step=state.step, tokens=state.tokens_seen, elapsed_s=state.elapsed, run=run.order,
                params=trajectory_params(run.params), segments=state.segments, optimizer=run.optimizer.state_dict(),
                scheduler=run.scheduler.state_dict(), scaler=run.scaler.state_dict(), window=window)


def _checkpoint(run, state):
    """A checkpoint of this step (main process), every process waiting for it."""
    state.elapsed = time.perf_counter() - state.started
    if run.main:
        state.checkpoint = save_checkpoint(run.output_dir, run.student, run.tokenizer, _checkpoint_state(run, state))
    state.checkpoint_step = state.step
    run.accelerator.wait_for_everyone()


def _checkpoint_interrupted(run, state):
    """On KeyboardInterrupt (SIGTERM and SIGHUP too, lib.checkpoints): a checkpoint of the last completed
    optimizer step, unless there is one; no barrier, other processes may already be gone."""
    if not run.main or state.step == state.checkpoint_step:
        return
    world = run.accelerator.num_processes
    with signals_deferred("the interrupted run's checkpoint is written"):
        state.elapsed = time.perf_counter() - state.started
        if world == 1:  # the unlogged steps' sums, so the resumed log equals an uninterrupted one
            saved_window = state.window.saved(time.perf_counter())
        else:  # other processes' sums are out of reach without a barrier: their tokens are estimated
            saved_window, state.tokens_seen = None, state.tokens_seen + int(state.window.tokens) * world
        slot = save_checkpoint(run.output_dir, run.student, run.tokenizer, _checkpoint_state(run, state, saved_window))
    print(f"interrupted: checkpoint of step {state.step} written to {slot}; run again to resume")


def _summary(run, state, evaluate):
    """What ``distill`` returns: the run's counts, its log and held-out curve, its final losses and folders."""
    plan, log = run.plan, read_log(run.log_path)
    last = log[-1] if log else (state.last_record or {})
    return dict(steps=state.step, total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch,
                warmup_steps=plan.warmup_steps, epochs=state.step / plan.steps_per_epoch, tokens=state.tokens_seen,
                wall_time_s=state.elapsed, earlier_wall_time_s=state.earlier_elapsed,
                tokens_per_s=state.tokens_seen / state.elapsed if state.elapsed else None,
                resumed_from=state.resumed_from, precision=str(run.dtype).replace("torch.", ""),
                world_size=run.accelerator.num_processes,
                final={k: last[k] for k in losses.log_fields() if k in last}, log=log,
                heldout_curve=read_log(run.heldout_path) if evaluate is not None else [],
                log_path=str(run.log_path), checkpoint=str(state.checkpoint) if state.checkpoint else None,
                segments=state.segments, output_dir=str(run.output_dir))


def _distill(accelerator, teacher, student, dataset, params, output_dir, tokenizer, token_probs, progress, on_log,
             evaluate):
    """The loop (nanoGPT's shape, the authors' prepare_batch / step / optimize inside train_step and
    optimizer_step): every optimizer step is seeded, trained, checked for NaN, applied and counted; then logged,
    evaluated and checkpointed when due."""
    run = _prepare(accelerator, teacher, student, dataset, params, output_dir, tokenizer, token_probs, progress)
    state = _start(run)
    total = run.plan.total_steps
    bar = tqdm(total=total, initial=state.step, desc="distill", disable=not (progress and run.main), dynamic_ncols=True)
    state.started = time.perf_counter() - state.elapsed
    try:
        _start_logs(run, state)
        if evaluate is not None and params.eval_every and state.resumed_from is None:
            # the learning curve's first point: the student as initialised
            state.pause(_evaluate_heldout(run, state, evaluate))
        for micro_batches in _step_batches(run, state.step):
            generator = _seed_step(run, state.step)
            sums, tokens, positions = train_step(micro_batches, teacher, run.model, run.masking, run.settings,
                                                 run.layers, run.dtype, run.scaler, accelerator, generator)
            _check_finite(run, state, sums)
            grad_norm, lr = optimizer_step(run.optimizer, run.scheduler, run.scaler, run.model.parameters(),
                                           params.max_grad_norm)
            state.step += 1
            state.window.add(sums, grad_norm, tokens, positions)  # only whole steps: an interrupt may cut one short
            bar.update(1)

            step = state.step
            eval_due = evaluate is not None and (step == total or (params.eval_every and step % params.eval_every == 0))
            checkpoint_due = step % params.checkpoint_every == 0 or step == total
            if step % params.log_every == 0 or checkpoint_due or eval_due:  # an evaluation needs the tokens seen
                _log(run, state, lr, bar, on_log)
            if eval_due:
                state.pause(_evaluate_heldout(run, state, evaluate))
            if checkpoint_due:
                _checkpoint(run, state)
        state.elapsed = time.perf_counter() - state.started
        if run.main:
            save_model(run.student, output_dir, tokenizer)  # output_dir itself is the model directory
        accelerator.wait_for_everyone()
    except KeyboardInterrupt:
        _checkpoint_interrupted(run, state)
        raise
    finally:
        bar.close()
    return _summary(run, state, evaluate)


def weights_digest(model):
    """sha1 of a model's state dict (names and bytes): equal digests mean equal weights, e.g. on every DDP rank."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def estimate_memory(teacher_config, student_config, batch_size, seq_length, precision="fp16", gpu_gib=16.0):
    """Rough GPU memory (GiB) of one distillation micro-batch: the fp32 teacher, the fp32 student with its
    gradients and two AdamW moments, autocast's half-precision weight copies, the student's saved activations
    (~34 bytes per token and hidden unit per layer in half precision with fused attention, Korthikanti et al.
    2022; twice that in fp32), the teacher's kept hidden states, and the logits (~36 bytes per position and
    vocabulary entry across the float32 copies, softmaxes and gradients of the loss, as measured (issue 11: 36
    against the 32 first assumed, which left the total ~15% low). In fp32 the fused head (lib.training.fused_head,
    the triple loss) never holds the logits: three float32 buffers of lib.losses.FUSED_CHUNK_ROWS rows instead.
    `make gpu-check` re-measures the peak of a t4 step. Default: a 16 GB T4."""
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
        "logits and loss": (tokens * sc.vocab_size * 36 if half  # 36: measured (issue 11), not 32
                            else 3 * min(losses.FUSED_CHUNK_ROWS, tokens) * sc.vocab_size * 4),
    }
    parts = {k: v / gib for k, v in parts.items()}
    total = sum(parts.values())
    return dict(parts=parts, total_gib=total, gpu_gib=gpu_gib, fits=total < 0.9 * gpu_gib,
                teacher_parameters=p_teacher, student_parameters=p_student, batch_size=batch_size,
                seq_length=seq_length, precision=precision)
