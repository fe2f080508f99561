"""The fine-tuning loop: one task-agnostic loop on Hugging Face Accelerate (DDP, FSDP, DeepSpeed, mixed precision
and CPU all come from Accelerate), with the task plug-in supplying data, loss and metrics."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from accelerate import Accelerator, DataLoaderConfiguration, DistributedType
from accelerate.utils import ProjectConfiguration, broadcast_object_list, gather_object, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..hub import HubTokenError, PublishError, publish_folder, require_ready_to_publish
from .arguments import DEFAULT_TASK, add_common_arguments, finalize_arguments
from .checkpointing import CheckpointManager, list_checkpoints, read_state
from .errors import DataError, FinetuneError
from .model_card import build_model_card
from .schedules import build_scheduler
from .seeding import seed_step
from .tasks import TASKS, Task, get_task

logger = logging.getLogger("hf_localvit.finetune")

RESULTS_NAME = "all_results.json"
# Fault injection for the kill-and-resume tests: "after-step:N" or "checkpoint-written:N" SIGKILLs the process there.
FAULT_ENV = "HF_LOCALVIT_FINETUNE_FAULT"
# Replicas hold the full model in these modes, so their weights can be compared after training.
_REPLICATED = {kind for kind in DistributedType if kind.name.startswith("MULTI_")}


def build_parser(task: type[Task]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune.py",
        description="Fine-tune a DWNet model with Hugging Face Accelerate: `accelerate launch finetune.py --model "
        "NAME_OR_PATH --dataset NAME_OR_PATH --output-dir DIR`. Without --dataset it trains the offline "
        "scikit-learn digits demo (and the defaults shown are the demo's).",
    )
    add_common_arguments(parser, list(TASKS))
    task.add_arguments(parser)
    parser.set_defaults(**task.defaults())
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", default=DEFAULT_TASK)
    pre.add_argument("--dataset")
    known, _ = pre.parse_known_args(argv)
    task = TASKS.get(known.task, TASKS[DEFAULT_TASK])  # an unknown --task is reported by the full parser
    parser = build_parser(task)
    if known.dataset is None:
        demo = task.demo_defaults()
        if demo is None and not {"-h", "--help"} & set(argv):
            parser.error(f"--dataset is required for --task {task.name} (it has no offline demo dataset).")
        parser.set_defaults(**(demo or {}))
    args = parser.parse_args(argv)
    if args.dataset is not None and args.model is None:
        parser.error("--model is required with --dataset: a preset (e.g. dwnet-tiny), a local folder or a Hub id.")
    return finalize_arguments(args, parser)


def _fault(point: str, step: int) -> None:
    if os.environ.get(FAULT_ENV) == f"{point}:{step}":
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _configure_logging(accelerator: Accelerator) -> None:
    """INFO from this package on the main process only; Accelerate's own chatter (every file of every checkpoint)
    at WARNING. A logging set-up that already exists (e.g. pytest's) is kept."""
    main = accelerator.is_main_process
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("hf_localvit").setLevel(logging.INFO if main else logging.ERROR)
    logging.getLogger("accelerate").setLevel(logging.WARNING if main else logging.ERROR)
    if main:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:
        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
        transformers.utils.logging.set_verbosity_error()


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weights, not on biases and normalisation parameters."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _sync_buffers(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over replicas, so every process evaluates
    and saves the same model; DDP otherwise leaves each replica with the statistics of its own last batch."""
    if accelerator.num_processes == 1 or accelerator.distributed_type not in _REPLICATED:
        return
    buffers = [buffer for buffer in accelerator.unwrap_model(model).buffers() if buffer.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([buffer.detach().reshape(-1).float() for buffer in buffers])
    flat = accelerator.reduce(flat, reduction="mean")
    offset = 0
    for buffer in buffers:
        buffer.copy_(flat[offset : offset + buffer.numel()].view_as(buffer))
        offset += buffer.numel()


def _replica_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _dwnet_config(config: Any) -> Any:
    """The DWNet config of a model: its own, or its backbone's (UperNet, detectors); None for other models."""
    for candidate in (config, getattr(config, "backbone_config", None)):
        if getattr(candidate, "model_type", None) == "dwnet":
            return candidate
    return None


def _scalar_config(config: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value if isinstance(value, (int, float, str, bool)) else str(value)
        for key, value in config.items()
        if value is not None
    }


class _LossWindow:
    """Training loss since the last flush; flushed (reduced over processes) at the same steps on every process."""

    def __init__(self, accelerator: Accelerator) -> None:
        self.accelerator = accelerator
        self.total = torch.zeros((), dtype=torch.float32, device=accelerator.device)  # no float64 on MPS
        self.micro_batches = 0
        self.steps = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach().float()
        self.micro_batches += 1

    def flush(self) -> tuple[float, int] | None:
        if self.steps == 0:
            return None
        local = self.total / max(self.micro_batches, 1)
        mean = float(self.accelerator.reduce(local, reduction="mean"))
        steps = self.steps
        self.total.zero_()
        self.micro_batches = self.steps = 0
        return mean, steps


class Trainer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.output_dir = Path(args.output_dir)
        self.start_time = time.time()

    # ----------------------------------------------------------------------------------------------------- setup
    def _make_accelerator(self) -> Accelerator:
        args = self.args
        kwargs: dict[str, Any] = {}
        if args.mixed_precision is not None:
            kwargs["mixed_precision"] = args.mixed_precision
        return Accelerator(
            cpu=args.cpu,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            log_with=args.report_to or None,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "runs")
            ),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
            **kwargs,
        )

    def _resolve_resume(self, checkpoints: CheckpointManager) -> Path | None:
        args = self.args
        if args.resume_from_checkpoint:
            path = checkpoints.resolve(args.resume_from_checkpoint)
            if path is None:
                logger.info(f"No complete checkpoint in {checkpoints.root}: starting from scratch.")
            checkpoints.remove_stale()
            return path
        if list_checkpoints(checkpoints.root):
            if not args.overwrite_output_dir:
                raise FinetuneError(
                    f"{self.output_dir} already holds checkpoints of an earlier run. Pass --resume-from-checkpoint "
                    "latest to continue it, --overwrite-output-dir to start afresh, or another --output-dir."
                )
            checkpoints.remove_all()
        checkpoints.remove_stale()
        return None

    def _loaders(self, task: Task) -> tuple[DataLoader, DataLoader]:
        args = self.args
        pin = self.accelerator.device.type == "cuda"
        common = {"num_workers": args.num_workers, "collate_fn": task.collate, "pin_memory": pin}
        train = DataLoader(
            task.train_dataset, batch_size=args.per_device_train_batch_size, shuffle=True, drop_last=True, **common
        )
        evaluation = DataLoader(task.eval_dataset, batch_size=args.per_device_eval_batch_size, shuffle=False, **common)
        return train, evaluation

    # ------------------------------------------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        args = self.args
        if args.push_to_hub:
            try:
                require_ready_to_publish()
            except (HubTokenError, PublishError) as error:
                raise FinetuneError(f"--push-to-hub: {error} Or leave --push-to-hub out and run "
                                    "`hf-localvit publish OUTPUT_DIR --repo-id ...` later.") from None
        self.accelerator = accelerator = self._make_accelerator()
        _configure_logging(accelerator)
        set_seed(args.seed)
        checkpoints = CheckpointManager(self.output_dir, accelerator, args.checkpoints_total_limit)
        resume_path = self._resolve_resume(checkpoints)

        task = self.task = get_task(args.task)(args)
        with accelerator.main_process_first():
            task.setup(accelerator)
        train_loader, eval_loader = self._loaders(task)

        num_processes = accelerator.num_processes
        batches_per_epoch = len(train_loader) // num_processes  # what Accelerate's sharding (drop_last) yields
        if batches_per_epoch == 0:
            raise DataError(
                f"The training set has {len(task.train_dataset)} examples, fewer than one batch per process "
                f"({args.per_device_train_batch_size} x {num_processes}). Lower --per-device-train-batch-size."
            )
        steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
        max_steps = args.max_steps or args.num_epochs * steps_per_epoch
        num_epochs = math.ceil(max_steps / steps_per_epoch)
        warmup_steps = args.warmup_steps if args.warmup_steps is not None else math.ceil(args.warmup_ratio * max_steps)
        # At least one step after the warm-up: the polynomial schedule divides by the decay steps.
        warmup_steps = min(warmup_steps, max_steps - 1)

        model = task.model
        optimizer = torch.optim.AdamW(_param_groups(model, args.weight_decay), lr=args.learning_rate)
        # Accelerate steps a prepared scheduler once per process per optimizer step, hence the scaling.
        scheduler = build_scheduler(
            args.lr_scheduler_type,
            optimizer,
            num_warmup_steps=warmup_steps * num_processes,
            num_training_steps=max_steps * num_processes,
        )
        model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
            model, optimizer, train_loader, eval_loader, scheduler
        )
        if len(train_loader) != batches_per_epoch:
            raise RuntimeError(f"Expected {batches_per_epoch} batches per process and epoch, got {len(train_loader)}.")
        self.model, self.eval_loader = model, eval_loader

        self.run_fields = {
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "num_processes": num_processes,
            "train_rows": len(task.train_dataset),
            "seed": args.seed,
            "max_steps": max_steps,
        }
        state: dict[str, Any] = {"global_step": 0, "epoch": 0, "batches_in_epoch": 0, "log_history": []}
        if resume_path is not None:
            saved = read_state(resume_path)
            checkpoints.check_compatible(resume_path, saved, self.run_fields)
            if saved.get("max_steps") != max_steps:
                logger.warning(
                    f"The checkpoint was written by a run of {saved.get('max_steps')} steps; this one has {max_steps}."
                )
            accelerator.load_state(str(resume_path))
            state = {key: saved[key] for key in state}
            logger.info(
                f"Resumed from {resume_path}: step {state['global_step']}, epoch {state['epoch']}, "
                f"{state['batches_in_epoch']} batches into it."
            )
        self.state = state

        hyperparameters = self._hyperparameters(
            max_steps=max_steps, num_epochs=num_epochs, warmup_steps=warmup_steps, steps_per_epoch=steps_per_epoch
        )
        self.hyperparameters = hyperparameters
        if args.report_to:
            accelerator.init_trackers("finetune", config=_scalar_config(hyperparameters))
        info = task.dataset_info
        logger.info(
            f"{task.name}: {info.train_rows} training examples, {info.validation_rows} validation examples "
            f"({info.validation}); {num_processes} process(es) on {accelerator.device} "
            f"({accelerator.distributed_type}, mixed precision {accelerator.mixed_precision}); {max_steps} steps = "
            f"{num_epochs} epoch(s) of {steps_per_epoch} steps, {hyperparameters['total_train_batch_size']} "
            "examples per step."
        )

        self._train(train_loader, optimizer, scheduler, checkpoints, max_steps, steps_per_epoch)
        return self._finish(max_steps, steps_per_epoch, resume_path)

    def _hyperparameters(self, **computed: Any) -> dict[str, Any]:
        args, accelerator, model = self.args, self.accelerator, self.task.model
        config = model.config
        return {
            "model": args.model,
            "optimizer": "AdamW (no weight decay on biases and norms)",
            "learning_rate": args.learning_rate,
            "weight_decay": args.weight_decay,
            "lr_scheduler_type": args.lr_scheduler_type,
            "warmup_steps": computed["warmup_steps"],
            "num_epochs": computed["num_epochs"],
            "max_steps": computed["max_steps"],
            "steps_per_epoch": computed["steps_per_epoch"],
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "num_processes": accelerator.num_processes,
            "total_train_batch_size": args.per_device_train_batch_size
            * args.gradient_accumulation_steps
            * accelerator.num_processes,
            "max_grad_norm": args.max_grad_norm,
            "mixed_precision": accelerator.mixed_precision,
            "drop_path_rate": getattr(config, "drop_path_rate", getattr(_dwnet_config(config), "drop_path_rate", None)),
            "image_size": getattr(config, "image_size", None),
            "seed": args.seed,
            **self.task.hyperparameters(),
        }

    # ---------------------------------------------------------------------------------------------------- loop
    def _train(self, train_loader, optimizer, scheduler, checkpoints, max_steps: int, steps_per_epoch: int) -> None:
        args, accelerator, task, model, state = self.args, self.accelerator, self.task, self.model, self.state
        window = _LossWindow(accelerator)
        progress = tqdm(
            total=max_steps,
            initial=state["global_step"],
            desc="training",
            disable=not accelerator.is_main_process,
            dynamic_ncols=True,
        )
        batches_per_epoch = len(train_loader)
        model.train()
        while state["global_step"] < max_steps:
            epoch = state["epoch"]
            train_loader.set_epoch(epoch)
            task.train_dataset.set_epoch(epoch)
            skip = state["batches_in_epoch"]
            loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
            batch_index = skip
            for batch in loader:
                # Every random draw of this micro-batch (MixUp, drop path, ...) depends on (seed, position) only.
                seed_step(args.seed, epoch, batch_index, accelerator.process_index)
                with accelerator.accumulate(model):
                    batch = task.prepare_train_batch(batch)
                    loss = task.training_loss(model, batch)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                window.add(loss)
                batch_index += 1
                if not accelerator.sync_gradients:
                    continue
                state["global_step"] += 1
                window.steps += 1
                step = state["global_step"]
                end_of_epoch = batch_index >= batches_per_epoch
                state["epoch"], state["batches_in_epoch"] = (epoch + 1, 0) if end_of_epoch else (epoch, batch_index)
                progress.update(1)
                finished = step >= max_steps
                epochs_done = epoch + 1 if end_of_epoch else None

                if step % args.logging_steps == 0 or finished:
                    self._log_train(window, scheduler, step, steps_per_epoch, progress)
                if (
                    finished
                    or (args.eval_steps and step % args.eval_steps == 0)
                    or (epochs_done and args.eval_epochs and epochs_done % args.eval_epochs == 0)
                ):
                    self._log_eval(self.evaluate(), step, steps_per_epoch)
                checkpointing = args.checkpoint_steps or args.checkpoint_epochs
                if checkpointing and (
                    finished
                    or (args.checkpoint_steps and step % args.checkpoint_steps == 0)
                    or (epochs_done and args.checkpoint_epochs and epochs_done % args.checkpoint_epochs == 0)
                ):
                    self._log_train(window, scheduler, step, steps_per_epoch, progress)  # keep the loss in the state
                    checkpoints.save(step, {**state, **self.run_fields}, fault_hook=_fault)
                _fault("after-step", step)
                if finished or end_of_epoch:
                    break
            else:  # the loader ended without a sync step (cannot happen with Accelerate's end-of-loader sync)
                state["epoch"], state["batches_in_epoch"] = epoch + 1, 0
        progress.close()

    def _log_train(self, window: _LossWindow, scheduler, step: int, steps_per_epoch: int, progress) -> None:
        flushed = window.flush()
        if flushed is None:
            return
        loss, steps = flushed
        learning_rate = scheduler.get_last_lr()[0]
        entry = {
            "step": step,
            "epoch": step / steps_per_epoch,
            "train_loss": loss,
            "steps": steps,
            "learning_rate": learning_rate,
        }
        self.state["log_history"].append(entry)
        progress.set_postfix(loss=f"{loss:.4f}", lr=f"{learning_rate:.2e}")
        if self.args.report_to:
            self.accelerator.log({"train/loss": loss, "train/learning_rate": learning_rate}, step=step)

    def _log_eval(self, metrics: dict[str, float], step: int, steps_per_epoch: int) -> None:
        entry = {"step": step, "epoch": step / steps_per_epoch, **{f"eval_{k}": v for k, v in metrics.items()}}
        self.state["log_history"].append(entry)
        shown = " | ".join(
            f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}"
            for name, value in metrics.items()
            if name != "samples" and isinstance(value, (int, float))  # per-class lists go to the results only
        )
        self._say(
            f"[eval] step {step} epoch {step / steps_per_epoch:.2f} | {shown} | {metrics.get('samples')} examples "
            f"| {self.last_eval_seconds:.1f}s"
        )
        if self.args.report_to:
            self.accelerator.log(
                {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step
            )

    def _say(self, message: str) -> None:
        """A line on the main process, printed above the progress bars."""
        if self.accelerator.is_main_process:
            tqdm.write(message)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Metrics over the whole evaluation set: per-example outputs are gathered from every process
        (`gather_for_metrics` drops the padding Accelerate adds to even out the last batch)."""
        accelerator, model, task = self.accelerator, self.model, self.task
        start = time.time()
        _sync_buffers(accelerator, model)
        model.eval()
        evaluator = task.new_evaluator()
        show = accelerator.is_main_process and sys.stderr.isatty()
        for batch in tqdm(self.eval_loader, desc="evaluating", leave=False, disable=not show):
            evaluator.add(accelerator.gather_for_metrics(task.eval_outputs(model, batch)))
        model.train()
        # Every process holds the gathered outputs; the metric (e.g. a COCO evaluation) is computed once and shared.
        shared = [evaluator.compute() if accelerator.is_main_process else None]
        if accelerator.num_processes > 1:
            broadcast_object_list(shared)
        metrics = shared[0]
        self.last_eval_seconds = time.time() - start
        return metrics

    # -------------------------------------------------------------------------------------------------- finish
    def _final_metrics(self) -> dict[str, Any]:
        evaluations = [entry for entry in self.state["log_history"] if any(k.startswith("eval_") for k in entry)]
        if not evaluations or evaluations[-1]["step"] != self.state["global_step"]:
            return {f"eval_{k}": v for k, v in self.evaluate().items()}
        return {k: v for k, v in evaluations[-1].items() if k.startswith("eval_")}

    def _finish(self, max_steps: int, steps_per_epoch: int, resume_path: Path | None) -> dict[str, Any]:
        args, accelerator, task, model = self.args, self.accelerator, self.task, self.model
        final = self._final_metrics()
        _sync_buffers(accelerator, model)
        train_entries = [entry for entry in self.state["log_history"] if "train_loss" in entry]
        train_steps = sum(entry["steps"] for entry in train_entries)
        train_loss = sum(entry["train_loss"] * entry["steps"] for entry in train_entries) / max(train_steps, 1)
        digests = None
        if accelerator.num_processes > 1 and accelerator.distributed_type in _REPLICATED:
            digests = gather_object([_replica_digest(accelerator.unwrap_model(model))])
        info = task.dataset_info
        results: dict[str, Any] = {
            "task": task.name,
            "model": args.model,
            "dataset": info.name,
            "train_examples": info.train_rows,
            "validation_examples": info.validation_rows,
            **final,
            "train_loss": train_loss if train_entries else None,
            "global_step": self.state["global_step"],
            "epoch": self.state["global_step"] / steps_per_epoch,
            "max_steps": max_steps,
            "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type.value),
            "mixed_precision": accelerator.mixed_precision,
            "device": str(accelerator.device),
            "replicas_in_sync": None if digests is None else len(set(digests)) == 1,
            "replica_digests": digests,
            "resumed_from": str(resume_path) if resume_path else None,
            "train_runtime_s": round(time.time() - self.start_time, 2),
            "log_history": self.state["log_history"],
        }
        if digests is not None and not results["replicas_in_sync"]:
            logger.error(f"The {len(digests)} model replicas differ after training: {digests}")
        state_dict = accelerator.get_state_dict(model)  # a collective under FSDP / DeepSpeed ZeRO-3
        if accelerator.is_main_process:
            self._save_final(accelerator.unwrap_model(model), state_dict, results)
        accelerator.wait_for_everyone()
        summary = " | ".join(f"{k} {v:.4f}" for k, v in final.items() if isinstance(v, float))
        accelerator.print(f"[done] {self.state['global_step']} steps | {summary} | saved to {self.output_dir}")
        if accelerator.is_main_process and args.predict_examples:
            accelerator.print(f"Predictions of pipeline('{task.pipeline_task}') on held-out images:")
            for line in task.predict_examples(self.output_dir, args.predict_examples):
                accelerator.print(line)
        if accelerator.is_main_process and args.push_to_hub:
            url = publish_folder(
                self.output_dir, args.push_to_hub, private=args.hub_private,
                commit_message="Upload fine-tuned model from hf-localvit finetune.py",
            )
            accelerator.print(f"Pushed {self.output_dir} to {url}")
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return results

    def _save_final(self, model: torch.nn.Module, state_dict: dict[str, torch.Tensor], results: dict[str, Any]) -> None:
        """Model (safetensors), processor, metrics and card into a temporary folder, then moved into place file by
        file, so the output folder never holds half-written files."""
        args, task = self.args, self.task
        tmp = self.output_dir / ".tmp-final"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp, state_dict=state_dict)
        task.processor.save_pretrained(tmp)
        with open(tmp / RESULTS_NAME, "w") as handle:
            json.dump(results, handle, indent=2)
        card_metrics = {
            key: value
            for key, value in results.items()
            if key.startswith("eval_") or key in ("train_loss", "global_step", "epoch")
        }
        description, dwnet = f"A {type(model).__name__}", _dwnet_config(model.config)
        if dwnet is not None:
            architecture = f"{dwnet.mixer} depth-wise convolutions, embed_dim {dwnet.embed_dim}, depths {dwnet.depths}"
            owner = "A DWNet image classifier" if dwnet is model.config else f"{description} with a DWNet backbone"
            description = f"{owner} ({architecture})"
        card = build_model_card(
            model_name=Path(args.push_to_hub or self.output_dir.resolve().name).name,
            task_name=task.name,
            pipeline_task=task.pipeline_task,
            tags=task.card_tags,
            base_model=getattr(task, "base_model", None),
            model_description=description,
            dataset=task.dataset_info,
            hyperparameters=self.hyperparameters,
            metrics=card_metrics,
            history=[entry for entry in results["log_history"] if any(k.startswith("eval_") for k in entry)],
            primary_metric=task.primary_metric,
            repo_id=args.push_to_hub,
            remote_code=any(tmp.glob("*.py")),
        )
        card.save(tmp / "README.md")  # after the model: the card says whether code was saved with it
        for path in tmp.iterdir():
            os.replace(path, self.output_dir / path.name)
        tmp.rmdir()


def run(args: argparse.Namespace) -> dict[str, Any]:
    return Trainer(args).run()


def _clean_message(error: BaseException) -> str:
    """Errors raised in a data loader worker come back with the worker's traceback: keep the original message."""
    message = str(error)
    if "Original Traceback" in message:
        marker = f"{type(error).__name__}: "
        message = message.rsplit(marker, 1)[-1].strip()
    return message


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except FinetuneError as error:
        print(f"finetune.py: error: {_clean_message(error)}", file=sys.stderr)
        return 2
    return 0
