"""Training throughput: our pipeline against what a user would pick instead, and against the machine's limit.

Side by side, in one process, on the same model, LoRA config, data, batch, sequence length, steps
and threads:

- **ours**: the trainer's own setup (``Recipe.setup()``): TRL SFT with best-fit-decreasing packing,
  padding-free batches, completion-only loss, precision from the spec (bf16 autocast on a CPU with
  native bf16);
- **TRL defaults**: ``SFTTrainer`` with a ``LoraConfig`` and an ``SFTConfig`` that sets only what
  TRL's docs set (batch, max_length, steps, learning rate), so padding to the longest in each batch
  and completion-only loss, and TRL's own default of activation checkpointing on: the baseline to beat;
- **padded to maxSeqLength** (``--also-padded``, for reference): transformers ``Trainer`` + peft,
  every row padded to maxSeqLength;
- **the limit**: the FLOP/s of a matmul of the model's own shapes (micro-batch tokens x hidden by
  hidden x intermediate), with the same threads, for each precision the spec allows (fp32, bf16,
  fp16). Training FLOP/s is 4 x parameters x useful tokens/s (LoRA: the frozen weights get no weight
  gradient, so forward 2N and backward 2N per token); MFU is that over the fastest limit.

The data are real code with long-tailed lengths: every documented function of the Python standard
library's own top-level modules, taken with ``ast`` (prompt = signature + docstring, completion = the
body), in file order.

    python bench/train_throughput.py                      # SmolLM2-135M, CPU or GPU
    python bench/train_throughput.py --model tiny-llama   # seconds, for a smoke run
    python bench/train_throughput.py --hub Qwen/Qwen2.5-0.5B-Instruct --batch 8 --seq 1024 --steps 30
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
# Training FLOPs per token per frozen parameter under LoRA: forward 2, backward (input gradients only) 2.
FLOPS_PER_TOKEN_PER_PARAMETER = 4


class TokenCounter:
    """Wraps ``trainer.training_step``: (non-pad tokens, all tokens) of every micro-batch trained,
    and, at each optimizer step's end, the wall clock, the CPU clock and how many micro-batches ran."""

    def __init__(self, trainer: Any):
        self.batches: list[tuple[int, int]] = []
        self.marks: list[tuple[float, float, int]] = []
        original = trainer.training_step

        def counted(model, inputs, *args, **kwargs):
            total = inputs["input_ids"].numel()
            # padding-free batches carry no attention mask and no pad tokens
            real = int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else total
            self.batches.append((real, total))
            return original(model, inputs, *args, **kwargs)

        trainer.training_step = counted
        trainer.add_callback(type("Clock", (TrainerCallback,), {"on_step_end": lambda _, *a, **k: self.mark()})())

    def mark(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.marks.append((time.perf_counter(), time.process_time(), len(self.batches)))


def measure(trainer, parameters: int, name: str) -> dict[str, Any]:
    """Train and measure from the end of the first optimizer step (warm-up) to the end of the last."""
    counter = TokenCounter(trainer)
    trainer.train()
    (wall0, cpu0, first), (wall1, cpu1, last) = counter.marks[0], counter.marks[-1]
    real = sum(r for r, _ in counter.batches[first:last])
    total = sum(t for _, t in counter.batches[first:last])
    seconds, cpu_seconds = wall1 - wall0, cpu1 - cpu0
    result = {"pipeline": name, "steps_timed": len(counter.marks) - 1, "seconds": round(seconds, 2),
              "tokens_per_second": round(real / seconds, 1), "all_tokens_per_second": round(total / seconds, 1),
              "non_pad_share": round(real / total, 4),
              # CPU time of this process per 1000 useful tokens: steadier than wall time on a shared machine.
              "cpu_seconds_per_1k_tokens": round(1000 * cpu_seconds / real, 2)}
    result["train_flops"] = round(FLOPS_PER_TOKEN_PER_PARAMETER * parameters * real / seconds)
    return result


DATASET_KEY = "stdlib_functions.jsonl"


def stdlib_functions(limit: int) -> list[dict[str, str]]:
    """Documented functions of the standard library's top-level modules: prompt = signature and
    docstring, completion = the rest of the body (real code, long-tailed lengths)."""
    records: list[dict[str, str]] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines(keepends=True)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node) \
                    and len(node.body) > 1:
                docstring_end = node.body[0].end_lineno
                records.append({"prompt": "".join(lines[node.lineno - 1:docstring_end]),
                                "completion": "".join(lines[docstring_end:node.end_lineno])})
                if len(records) == limit:
                    return records
    return records


def matmul_limits(tokens: int, hidden: int, intermediate: int, precisions: tuple[str, ...],
                  seconds: float = 1.0) -> dict[str, float]:
    """FLOP/s of a (tokens x hidden) @ (hidden x intermediate) matmul per precision, on this process's
    threads and device (the best of three timings of at least ``seconds`` each)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    limits = {}
    for precision in precisions:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        a = torch.randn(tokens, hidden, device=device, dtype=dtype)
        b = torch.randn(hidden, intermediate, device=device, dtype=dtype)
        best = 0.0
        for _ in range(3):
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                a @ b
                count += 1
                if device == "cuda":
                    torch.cuda.synchronize()
            best = max(best, 2 * tokens * hidden * intermediate * count / (time.perf_counter() - started))
        limits[precision] = best
    return limits


def run_spec(args) -> dict[str, Any]:
    from trainer.kit import TINY_RUN, merge

    base = {"hub": args.hub} if args.hub else {"embedded": args.model}
    return merge(TINY_RUN, {"spec": {
        "baseModel": base,
        "dataset": {"source": {"configMap": {"name": "codex-sample-data", "key": DATASET_KEY}}},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targetModules": ["all-linear"]},
        "training": {"maxSteps": args.steps, "perDeviceBatchSize": args.batch, "maxSeqLength": args.seq,
                     "learningRate": 2e-4, "warmupSteps": 0, "scheduler": "constant", "precision": args.precision,
                     "gradientAccumulationSteps": 1},
        "checkpointing": {"saveSteps": 100000},
        "evaluation": {"tasks": None},
    }})


def ours(args, workdir: Path, records: list[dict[str, str]]) -> dict[str, Any]:
    from codex_api import CodexTrainingRun, parse
    from trainer.kit import env_for

    from codex_trainer.recipe import Recipe

    env = env_for(workdir / "ours", None)
    (env.data_root / "configmap" / "codex-sample-data" / DATASET_KEY).write_text(
        "".join(json.dumps(record) + "\n" for record in records))
    recipe = Recipe(parse(CodexTrainingRun, run_spec(args)), env)
    recipe.setup()
    parameters = sum(p.numel() for p in recipe.trainer.model.parameters() if not p.requires_grad)
    result = measure(recipe.trainer, parameters, "ours: TRL SFT + packing (bfd, padding-free) + completion-only")
    result["precision"] = "bf16" if recipe.args.bf16 else "fp16" if recipe.args.fp16 else "fp32"
    return result


def _base(args, precision: str):
    """The tokenizer, a LoRA model as a user would make it, and the Trainer precision flags for ``precision``."""
    from codex_api.common import ModelSource
    from codex_trainer import modeling
    from codex_trainer.arguments import precision_flags

    source = ModelSource(hub=args.hub) if args.hub else ModelSource(embedded=args.model)
    cuda = torch.cuda.is_available()
    flags, _ = precision_flags(precision, cuda, modeling.native_bf16(cuda))
    dtype = torch.bfloat16 if flags["bf16"] else torch.float16 if flags["fp16"] else torch.float32
    return modeling.load_tokenizer(source), modeling.load_base_model(source, dtype=dtype), flags


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def trl_defaults(args, workdir: Path, records: list[dict[str, str]]) -> dict[str, Any]:
    """SFTTrainer as TRL's docs write it: a prompt-completion dataset, a peft config, SFTConfig defaults."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    tokenizer, model, flags = _base(args, args.precision)
    config = SFTConfig(output_dir=str(workdir / "trl"), per_device_train_batch_size=args.batch, max_length=args.seq,
                       max_steps=args.steps, learning_rate=2e-4, report_to="none", disable_tqdm=True, save_strategy="no",
                       logging_steps=1, use_cpu=not torch.cuda.is_available(), seed=1337, **flags)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(records),
                         processing_class=tokenizer, peft_config=lora_config())
    trainer.remove_callback(PrinterCallback)
    parameters = sum(p.numel() for p in trainer.model.parameters() if not p.requires_grad)
    result = measure(trainer, parameters, "TRL SFTTrainer defaults (pad to longest, completion-only)")
    result["activation_checkpointing"] = bool(config.gradient_checkpointing)
    return result


def padded_to_max(args, workdir: Path, records: list[dict[str, str]]) -> dict[str, Any]:
    """transformers Trainer + peft, each record tokenised on its own and padded to maxSeqLength."""
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorForLanguageModeling, PrinterCallback, Trainer, TrainingArguments

    tokenizer, model, flags = _base(args, args.precision)
    model = get_peft_model(model, lora_config())
    texts = [r["prompt"] + r["completion"] + tokenizer.eos_token for r in records]
    dataset = Dataset.from_dict(dict(tokenizer(texts, truncation=True, max_length=args.seq, padding="max_length")))
    training_args = TrainingArguments(
        output_dir=str(workdir / "padded"), per_device_train_batch_size=args.batch, max_steps=args.steps,
        learning_rate=2e-4, lr_scheduler_type="constant", save_strategy="no", report_to="none", disable_tqdm=True,
        logging_steps=1, use_cpu=not torch.cuda.is_available(), seed=1337, **flags)
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    trainer.remove_callback(PrinterCallback)
    parameters = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return measure(trainer, parameters, "reference: Trainer + peft, padded to maxSeqLength")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", choices=["smollm2-135m-instruct", "tiny-llama"])
    parser.add_argument("--hub", help="a Hub model id instead of an embedded model (GPU runs)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--records", type=int, default=256, help="standard-library functions to train on")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--also-padded", action="store_true", help="add the Trainer padded to maxSeqLength")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    from codex_trainer.logs import Redactor, setup_logging

    setup_logging(Redactor(), level=logging.WARNING)
    records = stdlib_functions(args.records)
    with tempfile.TemporaryDirectory(prefix="codex-bench-") as tmp:
        results = [ours(args, Path(tmp), records), trl_defaults(args, Path(tmp), records)]
        if args.also_padded:
            results.append(padded_to_max(args, Path(tmp), records))
    from transformers import AutoConfig

    from codex_api.common import ModelSource
    from codex_trainer import modeling

    config = AutoConfig.from_pretrained(modeling.resolve_model(
        ModelSource(hub=args.hub) if args.hub else ModelSource(embedded=args.model)).path)
    tokens = args.batch * args.seq if torch.cuda.is_available() else args.seq  # CPU: one packed row per micro-batch
    limits = matmul_limits(tokens, config.hidden_size, config.intermediate_size, ("fp32", "bf16", "fp16"))
    fastest = max(limits, key=limits.get)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    print(f"model {args.hub or args.model}, {len(records)} stdlib functions, batch {args.batch}, seq {args.seq}, "
          f"steps {args.steps}, {device}, load average {os.getloadavg()[0]:.1f}")
    print("limit: " + ", ".join(f"{name} matmul {tokens}x{config.hidden_size} @ {config.hidden_size}x"
                                f"{config.intermediate_size} {value / 1e9:.1f} GFLOP/s" for name, value in limits.items()))
    for result in results:
        result["mfu"] = round(result["train_flops"] / limits[fastest], 4)
        print(f"{result['pipeline']:<66} {result['tokens_per_second']:>8.1f} tok/s  non-pad "
              f"{result['non_pad_share']:.1%}  CPU {result['cpu_seconds_per_1k_tokens']:.1f} s/1k tok  "
              f"{result['train_flops'] / 1e9:.1f} GFLOP/s  MFU {result['mfu']:.1%} of {fastest}")
    ratio = results[0]["tokens_per_second"] / results[1]["tokens_per_second"]
    cpu_ratio = results[1]["cpu_seconds_per_1k_tokens"] / results[0]["cpu_seconds_per_1k_tokens"]
    print(f"ratio ours / TRL defaults: {ratio:.2f}x tokens/s, {cpu_ratio:.2f}x tokens per CPU-second; "
          f"ours at {results[0]['mfu']:.1%} of the {fastest} matmul limit ({results[0]['precision']} training)")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratio": ratio, "cpu_ratio": cpu_ratio, "limits": limits,
                                         "device": device}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
