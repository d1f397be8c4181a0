"""Training throughput: our pipeline (TRL SFT, best-fit packing, padding-free, completion-only loss)
against a naive transformers Trainer + peft baseline that pads every row to maxSeqLength.

Same model, LoRA config, data (the sample code pairs), batch size, sequence length, steps and
hardware, in one process, one run each. It prints, per pipeline, the useful (non-pad) tokens per
second, the share of non-pad tokens in the batches, and the ratio ours/baseline; with a GPU also
the model FLOPs utilisation (6 * parameters * tokens per second over the GPU's bf16 peak).

    python bench/train_throughput.py                      # SmolLM2-135M, CPU or GPU
    python bench/train_throughput.py --model tiny-llama   # seconds, for a smoke run
    python bench/train_throughput.py --hub Qwen/Qwen2.5-0.5B-Instruct --batch 8 --seq 1024 --steps 30
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
# Dense bf16 peak of the GPUs this project is lent, for MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


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
    if torch.cuda.is_available():
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in torch.cuda.get_device_name()), None)
        if peak:
            result["mfu"] = round(6 * parameters * real / seconds / peak, 4)
    return result


def run_spec(args) -> dict[str, Any]:
    from trainer.kit import TINY_RUN, merge

    base = {"hub": args.hub} if args.hub else {"embedded": args.model}
    return merge(TINY_RUN, {"spec": {
        "baseModel": base,
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targetModules": ["all-linear"]},
        "training": {"maxSteps": args.steps, "perDeviceBatchSize": args.batch, "maxSeqLength": args.seq,
                     "learningRate": 2e-4, "warmupSteps": 0, "scheduler": "constant", "precision": "bf16",
                     "gradientAccumulationSteps": 1},
        "checkpointing": {"saveSteps": 100000},
        "evaluation": {"tasks": None},
    }})


def ours(args, workdir: Path) -> dict[str, Any]:
    from codex_api import CodexTrainingRun, parse
    from trainer.kit import env_for

    from codex_trainer.recipe import Recipe

    recipe = Recipe(parse(CodexTrainingRun, run_spec(args)), env_for(workdir / "ours", None))
    recipe.setup()
    parameters = sum(p.numel() for p in recipe.trainer.model.parameters())
    return measure(recipe.trainer, parameters, "ours: TRL SFT + packing (bfd, padding-free) + completion-only")


def baseline(args, workdir: Path, padding: str) -> dict[str, Any]:
    """transformers Trainer + peft, each record tokenised on its own and padded (the naive recipe)."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForLanguageModeling, PrinterCallback, Trainer, TrainingArguments

    from codex_api.common import ModelSource
    from codex_trainer import modeling
    from codex_trainer.arguments import precision_flags
    from trainer.kit import SAMPLE_DATA

    source = ModelSource(hub=args.hub) if args.hub else ModelSource(embedded=args.model)
    tokenizer = modeling.load_tokenizer(source)
    cuda = torch.cuda.is_available()
    flags, _ = precision_flags("bf16", cuda, cuda and torch.cuda.is_bf16_supported())
    dtype = torch.bfloat16 if flags["bf16"] else torch.float16 if flags["fp16"] else torch.float32
    model = get_peft_model(modeling.load_base_model(source, dtype=dtype),
                           LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                      task_type="CAUSAL_LM"))
    records = [json.loads(line) for line in (SAMPLE_DATA / "code_pairs.jsonl").read_text().splitlines()]
    texts = [r["prompt"] + r["completion"] + tokenizer.eos_token for r in records]
    encoded = tokenizer(texts, truncation=True, max_length=args.seq,
                        padding="max_length" if padding == "max_length" else False)
    dataset = Dataset.from_dict(dict(encoded))
    training_args = TrainingArguments(
        output_dir=str(workdir / f"baseline-{padding}"), per_device_train_batch_size=args.batch,
        max_steps=args.steps, learning_rate=2e-4, lr_scheduler_type="constant", save_strategy="no",
        report_to="none", disable_tqdm=True, logging_steps=1, use_cpu=not cuda, seed=1337, **flags)
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    trainer.remove_callback(PrinterCallback)
    parameters = sum(p.numel() for p in model.parameters())
    label = "baseline: Trainer + peft, padded to maxSeqLength" if padding == "max_length" else \
        "baseline: Trainer + peft, padded to the longest in batch"
    return measure(trainer, parameters, label)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", choices=["smollm2-135m-instruct", "tiny-llama"])
    parser.add_argument("--hub", help="a Hub model id instead of an embedded model (GPU runs)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--also-dynamic", action="store_true", help="add a baseline padded to the longest row")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    from codex_trainer.logs import Redactor, setup_logging

    setup_logging(Redactor(), level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="codex-bench-") as tmp:
        results = [ours(args, Path(tmp))]
        results.append(baseline(args, Path(tmp), "max_length"))
        if args.also_dynamic:
            results.append(baseline(args, Path(tmp), "longest"))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    print(f"model {args.hub or args.model}, batch {args.batch}, seq {args.seq}, steps {args.steps}, {device}, "
          f"load average {os.getloadavg()[0]:.1f}")
    for result in results:
        extra = f"  MFU {result['mfu']:.1%}" if "mfu" in result else ""
        print(f"{result['pipeline']:<68} {result['tokens_per_second']:>9.1f} tok/s  non-pad "
              f"{result['non_pad_share']:.1%}  CPU {result['cpu_seconds_per_1k_tokens']:.1f} s/1k tok{extra}")
    ratio = results[0]["tokens_per_second"] / results[1]["tokens_per_second"]
    cpu_ratio = results[1]["cpu_seconds_per_1k_tokens"] / results[0]["cpu_seconds_per_1k_tokens"]
    print(f"ratio ours / naive baseline: {ratio:.2f}x tokens/s, {cpu_ratio:.2f}x tokens per CPU-second")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratio": ratio, "cpu_ratio": cpu_ratio,
                                         "device": device}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
