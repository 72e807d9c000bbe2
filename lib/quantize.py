"""Int8 dynamic quantization for CPU inference, and ONNX export: the student of stage 5 timed in int8.

``quantize_dynamic_int8`` defaults to ONNX Runtime (``torch.onnx.export(dynamo=True)``, then
``onnxruntime.quantization.quantize_dynamic``: int8 per-channel weights, activations quantized per call), the
maintained path that is fast on CPU here. ``torch.ao.quantization.quantize_dynamic`` still runs in torch 2.13 and
is as fast, but is deprecated (its warning announces removal and points to torchao); torchao's
``Int8DynamicActivationInt8WeightConfig`` is the maintained replacement, but in eager mode on CPU it is barely
faster than fp32. DistilBERT, batch 1, 32 tokens, 2 shared cores (noisy): fp32 31-37 ms, ONNX Runtime int8 9-12 ms,
torch.ao int8 8-13 ms, torchao int8 28-35 ms. Both alternatives remain available as ``backend=``. Requirements
for the default: ``onnxruntime``, ``onnx`` and ``onnxscript`` (the exporter); torchao only for its backend.

Every quantized model is called like the torch model (``model(**encoded)``), so lib.latency times it with the
same protocol; ``dtype_name`` says how a model's weights are stored.
"""
import copy
import inspect
import logging
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import transformers

from lib.models import count_parameters

BACKENDS = ("onnxruntime", "torch", "torchao")


class OrtModel:
    """An exported model run by ONNX Runtime on CPU, called like the torch model: ``model(**encoded)`` with torch
    tensors, returning a ModelOutput with the exported output (``logits`` or ``last_hidden_state``).
    ``num_parameters``: the source model's count (lib.models.count_parameters reads it)."""

    def __init__(self, path, config, output_name, num_parameters, int8, num_threads=0):
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()  # same threads as torch
        options.inter_op_num_threads = 1
        # idle ORT threads would otherwise spin, stealing cores from torch models timed interleaved with this one
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.path, self.config, self.output_name = Path(path), config, output_name
        self.num_parameters, self.int8 = num_parameters, int8

    def __call__(self, **inputs):
        feed = {name: inputs[name].detach().cpu().numpy().astype(np.int64) for name in self.input_names
                if name in inputs}  # token_type_ids etc. are dropped when the graph has no such input
        if "input_ids" not in feed:
            raise ValueError(f"OrtModel needs input_ids; got {sorted(inputs)}")
        if "attention_mask" not in feed and "attention_mask" in self.input_names:
            feed["attention_mask"] = np.ones_like(feed["input_ids"])
        if "token_type_ids" not in feed and "token_type_ids" in self.input_names:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        (output,) = self.session.run([self.output_name], feed)
        return transformers.utils.ModelOutput(**{self.output_name: torch.from_numpy(output)})

    def eval(self):
        return self


class _FirstOutput(torch.nn.Module):
    """The model's first output as a plain tensor (ONNX graphs return tensors, not ModelOutput)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)[0]


@contextmanager
def _quiet():
    """Silence exporter/quantizer chatter (deprecations, 'torchvision is not installed', 'consider pre-processing')."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def to_onnx(model, path=None, int8=False, num_threads=0):
    """Export ``model`` (fp32, CPU) with the torch.export-based exporter, dynamic batch and sequence length;
    with ``int8``, quantize its weights with ONNX Runtime's dynamic quantization. Returns an ``OrtModel``.
    ``path``: the .onnx file to write (default a new temporary directory)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    model = copy.deepcopy(model).eval().cpu().float()
    path = Path(path) if path else Path(tempfile.mkdtemp(prefix="onnx-")) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")
    # batch 2 with padding, so the exporter neither specialises on batch 1 nor on an all-ones mask
    vocab_size = model.config.vocab_size
    input_ids = torch.randint(min(1000, vocab_size - 1), vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    example = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    example["attention_mask"][1, -3:] = 0
    if "token_type_ids" in names:
        example["token_type_ids"] = torch.zeros_like(input_ids)
        example["token_type_ids"][:, 4:] = 1
    with torch.inference_mode():
        output_name = next(iter(model(**example).keys()))
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim(
        "seq", min=1, max=getattr(model.config, "max_position_embeddings", 4096))
    fp32_path = path if not int8 else path.with_name(path.stem + "-fp32.onnx")
    with _quiet():
        torch.onnx.export(_FirstOutput(model), (), str(fp32_path), kwargs={k: example[k] for k in names},
                          input_names=names, output_names=[output_name], dynamo=True, external_data=False,
                          dynamic_shapes={k: {0: batch, 1: seq} for k in names}, verbose=False)
    if int8:
        import onnx
        graph = onnx.load(str(fp32_path))
        del graph.graph.value_info[:]  # the exporter's shape annotations can trip the quantizer's shape inference
        onnx.save(graph, str(fp32_path))
        with _quiet():
            # per-channel weight scales: on a fine-tuned SST-2 classifier per-tensor lost 1 point, per-channel 0
            quantize_dynamic(str(fp32_path), str(path), weight_type=QuantType.QInt8, per_channel=True)
        fp32_path.unlink()
    return OrtModel(path, model.config, output_name, count_parameters(model), int8, num_threads)


def quantize_dynamic_int8(model, backend="onnxruntime", path=None, num_threads=0):
    """Int8 dynamic quantization of the Linear layers (int8 weights, activations quantized on the fly), CPU.
    backend 'onnxruntime' (default, maintained, fast here): export + ORT quantize_dynamic -> OrtModel.
    'torch': torch.ao.quantization.quantize_dynamic (deprecated in torch 2.13 but still working; fast).
    'torchao': torchao Int8DynamicActivationInt8WeightConfig (maintained; little speedup in eager mode on CPU).
    The input model is left untouched."""
    if backend == "onnxruntime":
        return to_onnx(model, path, int8=True, num_threads=num_threads)
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {list(BACKENDS)}")
    model = copy.deepcopy(model).eval().cpu().float()
    if backend == "torchao":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        return model
    with _quiet():  # torch.ao's deprecation notice, once per layer
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig  # int8 weights, one scale per output row
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8)


def available_backend():
    """'onnxruntime' when it and its exporter are installed, else 'torch' (said out loud)."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
        return "onnxruntime"
    except ImportError:
        print("onnxruntime/onnxscript not installed: int8 through torch.ao (deprecated) instead")
        return "torch"


def dtype_name(model):
    """How ``model``'s weights are stored: 'int8 (onnxruntime)', 'int8 (torch.ao)', 'int8 (torchao)', or the torch
    dtype ('float32', 'float16', ...)."""
    if isinstance(model, OrtModel):
        return "int8 (onnxruntime)" if model.int8 else "fp32 (onnxruntime)"
    if any(isinstance(m, torch.ao.nn.quantized.Linear) for m in model.modules()):  # the dynamic one subclasses it
        return "int8 (torch.ao)"
    if any(type(p).__module__.startswith("torchao") for p in model.parameters()):
        return "int8 (torchao)"
    param = next(model.parameters(), None)
    return str(param.dtype).replace("torch.", "") if param is not None else "?"


def cpu_fp32_only(model):
    """Whether ``model`` runs on CPU in fp32 only: ONNX Runtime and int8 models."""
    return isinstance(model, OrtModel) or dtype_name(model).startswith("int8")
