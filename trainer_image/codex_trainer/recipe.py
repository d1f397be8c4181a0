"""The training recipe: one CodexTrainingRun from data to a published, gated adapter."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from codex_api import contract
from codex_api.training_run import Artifact, CodexTrainingRun, Lineage, Metrics

from . import arguments, modeling, planning, sharded
from .baseline import BaselineCache, base_scores, baseline_inputs, cache_dir, expected_task_ids, judge
from .checkpoints import (CheckpointCallback, PreemptionCallback, PreemptionGuard, ResumeState,
                          agree_across_ranks, check_sharding, find_resume_checkpoint)
from .config import TrainerEnv
from .data import PreparedData, load_tasks, prepare_dataset
from .errors import Preempted, TrainerError
from .evaluation import completion_loss, generate_completions, perplexity, samples_table, score_samples
from .handoff import AdapterRef, BaselineRef, Handoff, adapter_dir, handoff_file
from .logs import Redactor, event
from .programs import generation_prompt
from .progress import ProgressTracker
from .publish import (output_dir, push_adapter, save_adapter, saved_artifact, summary, write_model_card,
                      write_results)
from .report import build_report, verdict_report, write_report
from .sinks import Sink


class Recipe:
    """Fine-tune, evaluate and publish one CodexTrainingRun; stages run in the order of the methods.

    A single-Job run calls setup, train, evaluate, save and report. The train stage of a staged run
    (codex_api.stages; ``work_dir`` set) calls setup, train, hand_off and report_trained: the generated
    programs then run in the sandbox stage, and the publish stage (publisher.Publisher) judges and
    publishes.

    ===========================  =========================================================
    spec field                   where it is used
    ===========================  =========================================================
    baseModel                    modeling.resolve_model / load_base_model (hub, pvc, embedded)
    dataset                      data.prepare_dataset: format, validationSplit, seed, maxRecords
    method, lora, training       TRL SFTTrainer / DPOTrainer with a peft LoraConfig (arguments.py); the
                                 memory plan and training.sharding (planning.py, sharded.py)
    checkpointing                saveSteps, keepLast, resume from the newest complete checkpoint
    evaluation                   eval loss, perplexity, pass@k and gates (evaluation.py, gates.py), each
                                 beside the base model's, scored once per base and task set (baseline.py)
    output                       the adapter folder (pvc path or scratch) and the Hub push
    ===========================  =========================================================

    Raises:
        InvalidSpecError: the model cannot be found or loaded as asked (exit 42).
        InvalidDataError: a record is malformed or no record is left (exit 42).
        Preempted: SIGTERM; a checkpoint was saved (exit 44).
        TransientError: the Hub or the network failed (exit 45).
    """

    def __init__(self, run: CodexTrainingRun, env: TrainerEnv, *, sinks: Optional[list[Sink]] = None,
                 guard: Optional[PreemptionGuard] = None, output_dir: Optional[Path] = None,
                 hub_endpoint: Optional[str] = None, push_base_delay: float = 1.0,
                 baseline_dir: Optional[Path] = None, work_dir: Optional[Path] = None):
        self.run, self.spec, self.env, self.work_dir = run, run.spec, env, work_dir
        self.guard = guard or PreemptionGuard()
        self.tracker = ProgressTracker(sinks or [])
        self.redact = Redactor([env.hf_token])
        self.output_dir_override, self.hub_endpoint, self.push_base_delay = output_dir, hub_endpoint, push_base_delay
        self.baseline_dir = baseline_dir  # where the base model's scores are cached; None: baseline.cache_dir
        self.cuda = torch.cuda.is_available()
        self.metrics = Metrics()
        self.lineage = Lineage(config_hash=arguments.canonical_hash(run.spec.to_wire()), image=env.image)
        self.gates = self.artifact = None
        self.plan, self.sharded = planning.RunPlan("none", None), False  # until setup plans the run
        self.results: dict[str, Any] = {"run": {"name": run.metadata.name, "namespace": run.metadata.namespace}}
        self.timings: dict[str, float] = {}

    def steps(self) -> tuple[Callable[[], Any], ...]:
        """The methods a run calls in order; the last one's value is the exit code."""
        if self.work_dir is not None:
            return self.setup, self.train, self.hand_off, self.report_trained
        return self.setup, self.train, self.evaluate, self.save, self.report

    # ---- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        started = time.monotonic()
        self.plan = planning.prepare(self.spec, self.env, self.tracker.record)
        self.sharded = self.plan.sharding == "fsdp"
        # Before the process group exists: an embedded model is built into this pod's own cache, and
        # transformers writes files on global rank 0 only once torch.distributed is initialised (on a
        # second node, rank 1 would find an empty directory).
        self.resolved = modeling.resolve_model(self.spec.base_model, token=self.env.hf_token,
                                               models_dir=self.env.models_dir, data_root=self.env.data_root)
        self.args = self._setup_args(self.spec.method)
        self.tracker.set_stage("prepare")
        self.data = self._setup_data(self.spec.dataset)
        self.tasks = self._setup_tasks(self.spec.evaluation)
        self.lineage = self.lineage.model_copy(update={"base_model_revision": self.resolved.revision})
        self.tokenizer = modeling.load_tokenizer(self.resolved)
        self.model = self._setup_model(self.spec.lora)
        self.resume_from, self.resume_state = self._setup_resume(self.spec.checkpointing)
        self.trainer = self._setup_trainer(self.spec.method)
        self.timings["setup_seconds"] = round(time.monotonic() - started, 2)

    def _setup_data(self, dataset_spec) -> PreparedData:
        data = prepare_dataset(dataset_spec, self.env.data_root, self.env.hf_token)
        event("prepare", "data.ready", **data.summary())
        self.lineage = self.lineage.model_copy(update={"dataset_sha256": data.sha256})
        return data

    def _setup_tasks(self, evaluation) -> list:
        if evaluation.tasks is None:
            return []
        tasks, self.tasks_sha256 = load_tasks(evaluation.tasks, self.env.data_root, self.env.hf_token)
        event("prepare", "tasks.ready", tasks=len(tasks), sha256=self.tasks_sha256)
        return tasks

    def _setup_args(self, method: str):
        from trl import DPOConfig, SFTConfig

        bf16 = modeling.native_bf16(self.cuda)
        flags, note = arguments.precision_flags(self.spec.training.precision, self.cuda, bf16)
        if note:
            event("prepare", "precision.fallback", requested=self.spec.training.precision, note=note)
        common = {**arguments.common_kwargs(self.spec, self.env.checkpoint_dir, self.cuda, bf16),
                  **arguments.sharding_kwargs(self.spec.training, self.plan.sharding, self.cuda)}
        if method == "dpo":
            args = DPOConfig(**{**common, **arguments.dpo_kwargs(self.spec)})
        else:
            args = SFTConfig(**{**common, **arguments.sft_kwargs(self.spec, self.cuda)})
        if args.per_device_train_batch_size != self.spec.training.per_device_batch_size:
            event("prepare", "cpu.microbatches", micro_batch=args.per_device_train_batch_size,
                  gradient_accumulation_steps=args.gradient_accumulation_steps,
                  note="packed rows one at a time on CPU; same effective batch")
        _ = args.device  # initialises the process group and pins this rank's GPU before the model loads
        self.is_main = args.process_index == 0
        if not self.is_main:
            self.tracker.sinks = []  # one rank reports progress
        return args

    def _setup_model(self, lora):
        dtype = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else torch.float32
        # Sharded, the weights load on the CPU and FSDP moves each rank's shard to its device.
        device = "cpu" if self.sharded else str(self.args.device) if lora.quantization == "none" else None
        model = modeling.load_base_model(self.resolved, dtype=dtype, quantization=lora.quantization, device=device,
                                         quant_storage=dtype if self.sharded else None)
        model.config.pad_token_id = self.tokenizer.pad_token_id
        model.generation_config.pad_token_id = self.tokenizer.pad_token_id
        return model

    def _setup_resume(self, checkpointing) -> tuple[Optional[Path], ResumeState]:
        self.env.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        current = ResumeState(step=0, epoch=0.0, seed=self.spec.training.seed, data_sha256=self.data.sha256,
                              config_hash=arguments.training_config_hash(self.spec),
                              train_records=len(self.data.train), world_size=self.args.world_size)
        path, saved = find_resume_checkpoint(self.env.checkpoint_dir, remove_incomplete=self.is_main)
        path, saved = agree_across_ranks(self.env.checkpoint_dir, path, saved)
        if path is not None:
            check_sharding(path, self.sharded)
            event("prepare", "resume", checkpoint=path.name, step=saved.step, epoch=saved.epoch)
            for difference in saved.disagreements(current):
                event("prepare", "resume.config_differs", level=logging.WARNING, detail=difference)
        self.checkpoint_callback = CheckpointCallback(self.env.checkpoint_dir, checkpointing.keep_last, current)
        return path, current

    def _setup_trainer(self, method: str):
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import PrinterCallback, ProgressCallback
        from trl import DPOTrainer, SFTTrainer

        self.preemption = PreemptionCallback(self.guard)
        trainer_class = sharded.trainer_class(DPOTrainer if method == "dpo" else SFTTrainer, self.plan.sharding,
                                              self.cuda)
        trainer = trainer_class(
            model=self.model, args=self.args, processing_class=self.tokenizer,
            train_dataset=Dataset.from_list(self.data.train),
            eval_dataset=Dataset.from_list(self.data.validation) if self.data.validation else None,
            peft_config=LoraConfig(**arguments.lora_kwargs(self.spec.lora)),
            callbacks=[self.checkpoint_callback, self.preemption, self.tracker],
        )
        # Progress goes through ProgressTracker; the Trainer's own printers would duplicate it on stdout.
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainable, total = trainer.model.get_nb_trainable_parameters()
        event("prepare", "trainer.ready", method=method, trainable_parameters=trainable, total_parameters=total,
              world_size=self.args.world_size, device=str(self.args.device), sharding=self.plan.sharding)
        return trainer

    # ---- train ---------------------------------------------------------------------------------
    def train(self) -> None:
        started = time.monotonic()
        self.tracker.set_stage("train")
        self.guard.in_training = True
        try:
            output = self.trainer.train(resume_from_checkpoint=str(self.resume_from) if self.resume_from else None)
        finally:
            self.guard.in_training = False
        if self.sharded and not sharded.is_sharded(self.trainer.model):
            raise TrainerError("spec.training.sharding: fsdp was asked for but the model was not sharded")
        if self.preemption.stopped_at is not None:
            raise Preempted(f"SIGTERM during training; checkpoint-{self.preemption.stopped_at} saved")
        losses = [entry["loss"] for entry in self.trainer.state.log_history if "loss" in entry]
        self.metrics = self.metrics.model_copy(update={
            "train_loss": round(float(output.training_loss), 6) if losses else None,
            "train_tokens": int(self.trainer.state.num_input_tokens_seen or 0) or None,
        })
        self.results["train"] = {"steps": self.trainer.state.global_step, "epoch": self.trainer.state.epoch,
                                 "resumed_from": self.resume_from.name if self.resume_from else None,
                                 "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                                 "losses": losses}
        self.timings["train_seconds"] = round(time.monotonic() - started, 2)
        event("train", "done", **{k: v for k, v in self.results["train"].items() if k != "losses"},
              train_tokens=self.metrics.train_tokens, seconds=self.timings["train_seconds"])

    # ---- evaluate ------------------------------------------------------------------------------
    def evaluate(self) -> None:
        started = time.monotonic()
        self._measure_loss()
        completions, base = self._completions()
        if not self.is_main:
            return
        scores = score_samples(self.tasks, completions, self.spec.evaluation.timeout_seconds) if self.tasks else []
        pass_metrics, self.gates = judge(self.spec.evaluation, self.tasks, scores,
                                         self._base_scores(base) if self.tasks else (), self.metrics.perplexity)
        self.metrics = self.metrics.model_copy(update=pass_metrics)
        self.results["samples"] = samples_table(scores, completions)
        self.timings["evaluate_seconds"] = round(time.monotonic() - started, 2)
        event("evaluate", "done", **self.metrics.to_wire(), gates=self.gates.to_wire())

    def _measure_loss(self) -> None:
        """Eval loss and perplexity, on every rank (the Trainer's evaluation is collective)."""
        self.tracker.set_stage("evaluate")
        eval_loss = self._eval_loss()
        self.metrics = self.metrics.model_copy(update={
            "eval_loss": None if eval_loss is None else round(eval_loss, 6),
            "perplexity": perplexity(eval_loss) if eval_loss is not None else None})

    def _completions(self) -> tuple[list[list[str]], Optional[list[list[str]]]]:
        """The adapter's completions and, when the baseline cache lacks their outcomes, the base model's.
        Rank 0 generates; sharded, every rank does in lockstep (each holds a part of every layer)."""
        if not self.tasks or not (self.is_main or self.sharded):
            return [], None
        cache = self._baseline_cache()
        cached = sharded.from_main(lambda: cache.read(self._sample_task_ids()) is not None, self.sharded)
        completions = self._generate()
        return completions, None if cached else self._generate_base()

    def _generate(self) -> list[list[str]]:
        """``samplesPerTask`` completions per task from the model as it is now (adapter enabled or not)."""
        evaluation = self.spec.evaluation
        return generate_completions(
            self.trainer.model, self.tokenizer, [generation_prompt(task.prompt) for task in self.tasks],
            samples=evaluation.samples_per_task, max_new_tokens=evaluation.max_new_tokens,
            temperature=evaluation.temperature, seed=self.spec.training.seed,
            batch_size=max(1, 32 // evaluation.samples_per_task), synced_gpus=self.sharded)

    def _base_scores(self, completions: Optional[list[list[str]]]) -> list:
        """The base model's scores on the same tasks and settings: ``completions`` (generated with the adapter
        disabled on the loaded model, no second copy of the weights) scored, or the cache a previous run wrote."""
        started = time.monotonic()
        cache = self._baseline_cache()
        scores, source = base_scores(cache, self._sample_task_ids(), lambda: score_samples(
            self.tasks, completions if completions is not None else self._generate_base(),
            self.spec.evaluation.timeout_seconds))
        self.results["baseline"] = {"source": source, "file": str(cache.path), "key": cache.key}
        self.timings["baseline_seconds"] = round(time.monotonic() - started, 2)
        return scores

    def _generate_base(self) -> list[list[str]]:
        with self.trainer.model.disable_adapter():
            return self._generate()

    def _baseline_cache(self) -> BaselineCache:
        return BaselineCache(self.baseline_dir or cache_dir(self.spec, self.env), baseline_inputs(
            self.spec, base_revision=self.resolved.revision, tasks_sha256=self.tasks_sha256,
            dtype=str(self.model.dtype).removeprefix("torch."), image=self.env.image, model_dir=self.resolved.path))

    def _sample_task_ids(self) -> list[str]:
        return expected_task_ids(self.tasks, self.spec.evaluation.samples_per_task)

    def _eval_loss(self) -> Optional[float]:
        if not self.data.validation:
            event("evaluate", "eval_loss.skipped", reason="no validation records")
            return None
        if self.spec.method == "dpo":
            pairs = [(r["prompt"], r["chosen"]) for r in self.data.validation]
            return completion_loss(self.trainer.model, self.tokenizer, pairs, self.spec.training.max_seq_length)
        loss = self.trainer.evaluate()["eval_loss"]
        return None if math.isnan(loss) else float(loss)

    # ---- save ----------------------------------------------------------------------------------
    def save(self) -> None:
        state = self._adapter_state()
        if not self.is_main:
            return
        folder = self.output_dir()
        self.artifact = self._save_adapter(folder, state)
        self.results.update(self._summary())
        write_model_card(folder, self.run, self.results)
        write_results(folder, self.results)
        event("save", "saved", dir=str(folder), bytes=self.artifact.size_bytes, revision=self.artifact.revision)
        if self.spec.output.hub is not None:
            self.tracker.set_stage("push")
            self.artifact = push_adapter(folder, self.run, self.artifact, self.env.hf_token,
                                         endpoint=self.hub_endpoint, base_delay=self.push_base_delay)
            self.results.update(self._summary())
            write_results(folder, self.results)

    def _adapter_state(self) -> Optional[dict]:
        """Sharded, the LoRA weights gathered whole onto rank 0 (collective); else None: the model saves its own."""
        return sharded.adapter_state_dict(self.trainer.model) if self.sharded else None

    def _save_adapter(self, folder: Path, state: Optional[dict]) -> Artifact:
        self.tracker.set_stage("save")
        self.tokenizer.padding_side = "right"
        save_adapter(self.trainer.model, self.tokenizer, folder, self.run, state_dict=state)
        return saved_artifact(self.spec, folder)

    def output_dir(self) -> Path:
        return self.output_dir_override if self.output_dir_override is not None else output_dir(self.spec, self.env)

    def _summary(self) -> dict[str, Any]:
        return summary(self.spec, {"metrics": self.metrics, "gates": self.gates, "artifact": self.artifact,
                                   "lineage": self.lineage},
                       self.data.summary() if hasattr(self, "data") else None, self.timings)

    # ---- hand off (the train stage of a staged run) ----------------------------------------------
    def hand_off(self) -> None:
        """Loss and perplexity, the completions the sandbox stage runs (the base model's only when the cache
        lacks their outcomes) and the adapter, into the work directory. Nothing is pushed, and nothing is written
        outside ``work_dir`` and the checkpoints: the output PVC is read-only in this stage."""
        started = time.monotonic()
        self._measure_loss()
        completions, base = self._completions()
        state = self._adapter_state()
        if not self.is_main:
            return
        cache = self._baseline_cache() if self.tasks else None
        cached = cache is not None and base is None
        event("evaluate", "generated", samples=sum(map(len, completions)), base_cached=cached)
        self.timings["evaluate_seconds"] = round(time.monotonic() - started, 2)
        saved = self._save_adapter(adapter_dir(self.work_dir), state)
        self.results.update(self._summary())
        self.handoff = Handoff(
            tasks=self.tasks, completions=completions, base_completions=base,
            baseline=BaselineRef(directory=str(cache.directory), inputs=dict(cache.inputs)) if cache else None,
            timeout_seconds=self.spec.evaluation.timeout_seconds, metrics=self.metrics, lineage=self.lineage,
            results=self.results, adapter=AdapterRef(sha256=saved.revision.removeprefix("sha256:"),
                                                     size_bytes=saved.size_bytes))
        self.handoff.write(handoff_file(self.work_dir))
        event("save", "handed_off", dir=str(self.work_dir), samples=len(self.handoff.samples()))

    # ---- report --------------------------------------------------------------------------------
    def report(self) -> int:
        """Write the termination message; the exit code says whether the gates passed."""
        if not self.is_main:
            return contract.EXIT_OK
        self.tracker.set_stage("report")
        report, code = verdict_report(self.gates, self.redact, metrics=self.metrics, artifact=self.artifact,
                                      lineage=self.lineage)
        write_report(report, self.env.termination_message_path)
        return code

    def report_trained(self) -> int:
        """The train stage's termination message: trained, and how many programs the sandbox stage runs."""
        if not self.is_main:
            return contract.EXIT_OK
        self.tracker.set_stage("report")
        write_report(build_report("Succeeded", contract.REASON_TRAINED,
                                  f"trained; {len(self.handoff.samples())} programs to run in the sandbox",
                                  self.redact, metrics=self.metrics, lineage=self.lineage),
                     self.env.termination_message_path)
        return contract.EXIT_OK

    def report_failure(self, error: TrainerError) -> int:
        """The report for a run that stopped early; the exit code comes from the error's kind."""
        if getattr(self, "is_main", True):
            write_report(build_report("Failed", error.reason, str(error), self.redact, metrics=self.metrics,
                                      artifact=self.artifact, lineage=self.lineage),
                         self.env.termination_message_path)
        return error.exit_code
