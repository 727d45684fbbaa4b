"""The training loop: :class:`Trainer` (one run, from data to ``results.json``); its entry point :func:`main` is in
:mod:`fer_mek.train.command`, its checkpoints in :mod:`fer_mek.train.checkpoint`.

Moved from ``scripts/train.py``. Runs on one CPU, one GPU or many through accelerate; the run folder it leaves is
described in :mod:`fer_mek.runs`. Reproducibility: shuffling is a function of ``(seed, epoch)``
(:class:`EpochSampler`), the per-sample augmentation a function of ``(seed, epoch, index)``
(:class:`SeededAugmentation`), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..environment import cpu_threads_of_run, cpu_threads_per_process, versions
from ..runs import (
    BEST,
    CHECKPOINT,
    CONFUSION_MATRIX,
    LAST,
    LOGS,
    RESULTS,
    TRAIN_CONFIG,
    TRAINING_CURVES,
    DataOptions,
    write_results,
    write_train_config,
)
from .checkpoint import load_checkpoint, save_checkpoint, saved_options
from .config import (
    TrainConfig,
    augmentation_options,
)
from .distill import build_teacher, distill_formula, distilled_forward, teacher_record, uses_flips
from .mixup import mixed_forward
from .optim import create_optimizer
from .sampling import EpochSampler, SeededAugmentation
from .schedule import build_scheduler, uses_step_schedule
from .state import TrainerState

__all__ = ["NO_VALIDATION_REASON", "EpochSampler", "SeededAugmentation", "create_optimizer", "Trainer", "TrainerState", "build_scheduler"]

#: ``results.json`` ``selection.reason`` of a run without a validation split (``--val-split none``).
NO_VALIDATION_REASON = "no validation split: the final checkpoint is reported, as the source does"


class Trainer:
    """One training run, from data to results.json. ``run()`` returns the results."""

    def __init__(self, config: TrainConfig):
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, GradScalerKwargs, ProjectConfiguration, set_seed
        from accelerate.utils.environment import parse_flag_from_env

        from ..environment import resolve_mixed_precision, training_device_type

        self.config = config
        self.run_dir = Path(config.output_dir)
        log_with = config.log_with
        if log_with == "tensorboard" and not _tensorboard_available():
            log_with = "none"  # said once below, not a silent change: results.json records the tracker used
        self.tracker = log_with
        # The precision used (--mixed-precision auto: bf16 where the device has it natively), and why, for the output.
        self.mixed_precision, self.mixed_precision_reason = resolve_mixed_precision(
            config.mixed_precision, training_device_type(use_cpu=parse_flag_from_env("ACCELERATE_USE_CPU")))
        handlers = []
        if self.mixed_precision == "fp16":
            handlers.append(GradScalerKwargs(growth_interval=config.grad_scaler_growth_interval))
        self.accelerator = Accelerator(
            mixed_precision=self.mixed_precision,
            gradient_accumulation_steps=config.grad_accum,
            log_with=None if log_with == "none" else log_with,
            project_config=ProjectConfiguration(project_dir=str(self.run_dir), logging_dir=str(self.run_dir / LOGS)),
            # Shuffling is a function of (seed, epoch) (EpochSampler; seedable samplers for any other loader):
            # exact resume, the same order on every process.
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
            kwargs_handlers=handlers,
        )
        set_seed(config.seed, device_specific=False)
        self.state = TrainerState()
        # With --val-split none there is no validation split: no per-epoch evaluation, the final weights are reported.
        self.validates = config.val_split != "none" or bool(config.fer2013_val)
        self.num_epochs = config.epochs  # with --train-steps: set by build_optimization
        self.interrupted = False
        self.stop_signal: int | None = None  # the signal that interrupted the run (SIGINT, SIGTERM)
        self.step_times: list[float] = []  # perf_counter() after each training step (benchmarks read it)
        self.teacher = None  # --method ldt: the frozen teacher (fer_mek.train.teacher.Teacher), built by setup

    # -- logging helpers
    def print(self, *args: Any) -> None:
        self.accelerator.print(*args)

    # -- setup
    def prepare_run_folder(self) -> None:
        from ..io import check_writable, writing

        if self.accelerator.is_main_process:
            if self.config.overwrite and self.run_dir.exists():
                shutil.rmtree(self.run_dir)
            check_writable(self.run_dir, "the run folder (--output-dir)")
            with writing(self.run_dir / TRAIN_CONFIG):
                write_train_config(self.run_dir, saved_options(self.config))
        self.accelerator.wait_for_everyone()

    def load_data(self) -> None:
        from ..data import class_counts, get_metadata

        # The run's split, rebuilt the same way by evaluation and publishing (fer_mek.runs.DataOptions).
        options = DataOptions.from_config(dataclasses.asdict(self.config))
        # Main process first: it builds caches (synthetic images, parsed CSVs) that the others then read.
        with self.accelerator.main_process_first():
            self.dataset = options.load()  # with --fer2013-val: validation is that Usage of the CSV
        train = self.dataset["train"]
        self.label_names = list(train.features["label"].names)
        self.class_counts = {split: class_counts(self.dataset[split]) for split in self.dataset}
        self.data_metadata = get_metadata(self.dataset)

    def build_model(self) -> None:
        from .. import MEKConfig, MEKForImageClassification, MEKImageProcessor
        from ..convert import reset_final_norm
        from ..finetune import initialize_from

        config = self.config
        baseline = config.method == "baseline"
        # --method ldt: the attention term only with --distill-attention (its RSL enters with --distill-weight < 1).
        attention = not baseline and (config.method != "ldt" or config.distill_attention)
        backbone_kwargs = dict(config.backbone_kwargs)
        if config.drop_path:
            backbone_kwargs["drop_path_rate"] = config.drop_path
        normalisation = {name: list(getattr(config, name)) for name in ("image_mean", "image_std")
                         if getattr(config, name) is not None}
        model_config = MEKConfig(
            backbone=config.backbone,
            backbone_kwargs=backbone_kwargs or None,
            head=config.head,
            head_init=config.head_init,
            dropout=config.dropout,
            image_size=config.image_size,
            id2label=dict(enumerate(self.label_names)),
            # Plain cross-entropy is RSL with no smoothing and no attention term.
            smoothing=0.0 if baseline else config.smoothing,
            attention_weight=config.attention_weight if attention else 0.0,
            class_counts=self.class_counts["train"],
            balance_weight_rule=config.balance_weight_rule,
            **normalisation,
        )
        self.model = MEKForImageClassification(model_config)
        self.init_report = {"source": "random"}
        if config.init != "random":
            # A backbone file, timm weights, or a saved fer-mek model with any label set (fer_mek.finetune).
            self.init_report = initialize_from(self.model, config.init, reset_final_norm=config.reset_final_norm)
        elif config.reset_final_norm:
            self.init_report.update(reset_final_norm(self.model))
        self.processor = MEKImageProcessor.from_model_config(model_config)
        if config.default_tta != "none":  # saved with the model: evaluation and inference use it
            self.processor.default_tta = config.default_tta
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def resolve_num_workers(self) -> int:
        """--num-workers, or with -1 the cores this process can spare: the cached pipeline only copies batches out of
        a memory map, so on a CPU device workers would just compete with the model; per-sample decoding needs them."""
        if self.config.num_workers >= 0:
            return self.config.num_workers
        per_process = cpu_threads_per_process(self.accelerator.num_processes)
        if self.config.data_pipeline == "cached":
            return 0 if self.accelerator.device.type == "cpu" else min(2, per_process)
        return min(8, max(1, per_process - 1))

    def build_loaders(self) -> None:
        from torch.utils.data import DataLoader

        config = self.config
        # The splits evaluated: validation (unless --val-split none) and test.
        self.eval_splits = [split for split in ("validation", "test")
                            if split in self.dataset and (split != "validation" or self.validates)]
        self.num_workers = self.resolve_num_workers()
        loader_kwargs: dict[str, Any] = {
            "batch_size": config.batch_size, "num_workers": self.num_workers,
            "pin_memory": self.accelerator.device.type == "cuda", "persistent_workers": self.num_workers > 0,
            # Every new loader iterator draws its workers' base seed from this generator, not from torch's global
            # one: a resumed run (which starts a new iterator mid-epoch) leaves the global generator, from which
            # dropout and drop-path draw on a CPU, exactly where the uninterrupted run has it. Samples are augmented
            # from (seed, epoch, index) whatever the worker seeds are.
            "generator": torch.Generator().manual_seed(config.seed),
        }
        weights = None
        if config.balanced_sampler:
            counts = self.class_counts["train"]
            weights = [1.0 / counts[label] for label in self.dataset["train"]["label"]]
        self.train_sampler = EpochSampler(len(self.dataset["train"]), config.seed, weights, config.epoch_size)
        if config.data_pipeline == "cached":
            from ..data import identity_collate

            train, evals = self._cached_datasets()
            loader_kwargs["collate_fn"] = identity_collate
        else:
            from ..data import collate_fn, make_transform

            train_transform = make_transform(self.processor, train=True, with_flip=uses_flips(config),
                                             **augmentation_options(config))
            train = SeededAugmentation(self.dataset["train"], train_transform, config.seed)
            if config.eval_crops != 1:  # the FER-2013 sources' Ncrop evaluation: crops' logits averaged
                from ..data import MEKBatchTransform
                from ..data.transforms import build_ncrop_eval_transform

                eval_transform = MEKBatchTransform(build_ncrop_eval_transform(
                    self.processor, resize=config.ncrop_resize, crops=config.eval_crops))
            else:
                eval_transform = make_transform(self.processor, train=False, with_flip=False)
            evals = {split: self.dataset[split].with_transform(eval_transform) for split in self.eval_splits}
            loader_kwargs["collate_fn"] = collate_fn
        self.train_loader = DataLoader(train, sampler=self.train_sampler, drop_last=config.drop_last, **loader_kwargs)
        self.eval_loaders = {split: DataLoader(data, shuffle=False, **loader_kwargs) for split, data in evals.items()}
        if len(self.train_loader) == 0:
            raise ValueError(f"the train split has {len(self.dataset['train'])} images, fewer than one batch "
                             f"(--batch-size {config.batch_size}); lower the batch size")

    def _cached_datasets(self) -> tuple[Any, dict[str, Any]]:
        """Pixel caches of every split (built once, by the main process first) and the batched augmentation."""
        from ..data import (
            BatchAugmentation,
            CachedImages,
            batched_augmentation_kwargs,
            cached_pixels,
            default_cache_dir,
        )
        from ..data.cache import describe_cache
        from ..data.transforms import processor_settings

        config, accelerator = self.config, self.accelerator
        settings = processor_settings(self.processor)
        size = (settings["height"], settings["width"])
        interpolation = str(getattr(settings["interpolation"], "value", settings["interpolation"]))
        pixels = {}
        with accelerator.main_process_first():
            for split in ("train", *self.eval_splits):
                pixels[split] = cached_pixels(
                    self.dataset[split], size, interpolation=interpolation, cache_dir=default_cache_dir(),
                    show_progress=accelerator.is_local_main_process,
                )
        self.print(f"pixel cache: train {describe_cache(pixels['train'])}")
        self.augment = BatchAugmentation(
            size, settings["mean"], settings["std"], normalize=settings["normalize"],
            **batched_augmentation_kwargs(**augmentation_options(config)),
        ).to(accelerator.device)
        self.eval_mean = self.augment.mean if settings["normalize"] else torch.zeros_like(self.augment.mean)
        self.eval_std = self.augment.std if settings["normalize"] else torch.ones_like(self.augment.std)
        train = CachedImages(pixels["train"], self.dataset["train"]["label"], seed=config.seed)
        evals = {split: CachedImages(pixels[split], self.dataset[split]["label"]) for split in self.eval_splits}
        return train, evals

    def build_optimization(self) -> None:
        config = self.config
        total_batch = config.batch_size * config.grad_accum * self.accelerator.num_processes
        self.lr = config.lr if config.lr is not None else 5e-4 * total_batch / 512
        self.optimizer = create_optimizer(self.model, config, self.lr, self.accelerator.device.type)
        self.steps_per_epoch = math.ceil(len(self.train_loader) / config.grad_accum)
        # A StepSchedule (timm-cosine, ...) is a function of the optimizer steps of one process: built after the
        # loader is sharded, stepped by train_step and checkpointed with the run, not prepared by accelerate.
        self.step_schedule = uses_step_schedule(config)
        if self.step_schedule:
            (self.model, self.optimizer, self.train_loader) = self.accelerator.prepare(
                self.model, self.optimizer, self.train_loader
            )
            self.steps_per_epoch = math.ceil(len(self.train_loader) / config.grad_accum)
            self.num_epochs = self.epochs_of(self.steps_per_epoch)
            self.scheduler = build_scheduler(config, self.optimizer.optimizer, self.steps_per_epoch, self.num_epochs)
        else:
            # Scheduler steps are optimizer steps of one process; accelerate scales them for N processes.
            self.scheduler = build_scheduler(config, self.optimizer, self.steps_per_epoch,
                                             num_processes=self.accelerator.num_processes)
            (self.model, self.optimizer, self.train_loader, self.scheduler) = self.accelerator.prepare(
                self.model, self.optimizer, self.train_loader, self.scheduler
            )
            self.num_epochs = self.epochs_of(math.ceil(len(self.train_loader) / config.grad_accum))
        if config.compile:
            # The wrapped module's forward is compiled in place: checkpoints, unwrap_model and save_pretrained keep
            # the plain module and its parameter names.
            self.accelerator.unwrap_model(self.model).compile()
        self.eval_loaders = {k: self.accelerator.prepare_data_loader(v) for k, v in self.eval_loaders.items()}
        self.ema = None
        if config.ema_decay > 0:
            from timm.utils import ModelEmaV3

            # Checkpointed as safetensors by fer_mek.train.checkpoint (not pickled through accelerate).
            self.ema = ModelEmaV3(self.accelerator.unwrap_model(self.model), decay=config.ema_decay)

    def epochs_of(self, steps_per_epoch: int) -> int:
        """Epochs of the run: ``--epochs``, or with ``--train-steps`` as many (optimizer steps of ``steps_per_epoch``
        per epoch) as the steps take, the last one cut."""
        if self.config.train_steps:
            return math.ceil(self.config.train_steps / steps_per_epoch)
        return self.config.epochs

    def stopped_early(self) -> bool:
        """Whether early stopping has ended the run (also when a resumed run's checkpoint says so)."""
        patience = self.config.early_stopping_patience
        return bool(patience) and self.state.epochs_without_improvement >= patience

    def reached_train_steps(self) -> bool:
        return bool(self.config.train_steps) and self.state.global_step >= self.config.train_steps

    # -- checkpoints (fer_mek.train.checkpoint: no pickle of ours, nothing unpickled that could run code)
    def save_checkpoint(self) -> None:
        """accelerate state + trainer state into checkpoint/, through a staging folder and renames."""
        save_checkpoint(self)

    def load_checkpoint(self) -> None:
        load_checkpoint(self)
        self.print(f"resumed from {self.run_dir / CHECKPOINT}: epoch {self.state.epoch + 1}, step "
                   f"{self.state.step_in_epoch} of {len(self.train_loader)} in that epoch, {self.state.global_step} "
                   "optimizer steps done")

    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def save_model(self, name: str) -> None:
        """best/ or last/: a save_pretrained folder (the EMA weights when EMA is on), written atomically."""
        from ..io import atomic_directory, writing

        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.eval_model())
            with writing(self.run_dir / name, "the model", intact="the folder keeps its previous content"), \
                    atomic_directory(self.run_dir / name, overwrite=True) as staging:
                model.save_pretrained(staging, safe_serialization=True)
                self.processor.save_pretrained(staging)
        self.accelerator.wait_for_everyone()

    # -- evaluation
    @torch.no_grad()
    def evaluate(self, split: str, model: torch.nn.Module | None = None) -> dict[str, Any]:
        from ..metrics import compute_metrics

        model = model if model is not None else self.eval_model()
        was_training = model.training
        model.eval()
        predictions, references = [], []
        for batch in self.eval_loaders[split]:
            pixel_values = self.eval_pixel_values(batch)
            crops = pixel_values.shape[1] if pixel_values.dim() == 5 else 0
            if crops:  # [B, N, C, H, W]: the crops' logits averaged, sum / N (the FER-2013 sources' evaluate)
                pixel_values = pixel_values.flatten(0, 1)
            with self.accelerator.autocast():
                logits = model(pixel_values=pixel_values).logits
            if crops:
                logits = torch.sum(logits.float().view(-1, crops, logits.shape[-1]), dim=1) / crops
            # gather_for_metrics drops the samples that pad the last batch of an uneven split across processes.
            preds, refs = self.accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"]))
            predictions.append(preds.cpu())
            references.append(refs.cpu())
        model.train(was_training)
        return compute_metrics(torch.cat(predictions), torch.cat(references), self.label_names)

    # -- the loop
    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The model's training inputs from a batch of the train loader (already on the device): the cached
        pipeline's uint8 images are augmented here, on the device; the flip pair is built after augmentation."""
        if "images" in batch:
            pixel_values = self.augment(batch["images"], batch["uniforms"])
            inputs: dict[str, Any] = {"pixel_values": pixel_values, "labels": batch["labels"]}
            if uses_flips(self.config):
                inputs["flipped_pixel_values"] = pixel_values.flip(-1)
        else:
            inputs = {key: batch[key] for key in ("pixel_values", "labels", "flipped_pixel_values") if key in batch}
            if inputs["pixel_values"].dim() == 5:  # N crops per image, each a sample (the sources' Ncrop training)
                crops = inputs["pixel_values"].shape[1]
                for key in ("pixel_values", "flipped_pixel_values"):
                    if key in inputs:
                        inputs[key] = inputs[key].flatten(0, 1)
                inputs["labels"] = torch.repeat_interleave(inputs["labels"], crops, dim=0)
        if self.config.channels_last:
            for key in ("pixel_values", "flipped_pixel_values"):
                if key in inputs:
                    inputs[key] = inputs[key].contiguous(memory_format=torch.channels_last)
        if "flipped_pixel_values" in inputs:
            inputs["single_pass"] = self.config.single_pass
        return inputs

    def eval_pixel_values(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Normalised evaluation inputs of an evaluation batch: the cached pipeline's uint8 images on the device,
        converted with the evaluation transform's operations (bit-identical to the per-sample pipeline)."""
        if "images" not in batch:
            return batch["pixel_values"]
        pixels = batch["images"].contiguous()  # the cache is NHWC: a permuted view would switch conv kernels
        return pixels.float().mul_(1.0 / 255.0).sub_(self.eval_mean).div_(self.eval_std)

    def mixes(self) -> bool:
        """Whether the loss is computed here (mixup, or the baseline's uniform label smoothing) rather than by the
        model alone."""
        config = self.config
        return config.mixup_alpha > 0 or (config.method == "baseline" and config.label_smoothing > 0)

    def train_step(self, inputs: dict[str, torch.Tensor]) -> Any:
        """Forward, backward, clipping and (at accumulation boundaries) one optimizer and scheduler step on model
        inputs already on the device (``pixel_values``, ``labels``, optional ``flipped_pixel_values``)."""
        config, accelerator = self.config, self.accelerator
        with accelerator.accumulate(self.model):
            forward = distilled_forward if self.teacher is not None else mixed_forward if self.mixes() else None
            outputs = forward(self, inputs) if forward is not None else self.model(**inputs)
            accelerator.backward(outputs.loss)
            if accelerator.sync_gradients and config.clip_grad_norm > 0:
                accelerator.clip_grad_norm_(self.model.parameters(), config.clip_grad_norm)
            self.optimizer.step()
            if not self.step_schedule:
                self.scheduler.step()  # accelerate's wrapper: only at accumulation boundaries, x num_processes
            elif accelerator.sync_gradients:
                self.scheduler.step()  # once per optimizer step, also when fp16's GradScaler skipped it
            self.optimizer.zero_grad(set_to_none=True)
        if config.train_mode_forward:  # LetheSec's train-accuracy pass: BatchNorm statistics of the clean batch
            with torch.no_grad():
                self.model(pixel_values=inputs["pixel_values"])
        return outputs

    def train_epoch(self, epoch: int) -> dict[str, float]:
        from tqdm.auto import tqdm

        config, accelerator = self.config, self.accelerator
        self.model.train()
        loader = self.train_loader
        if self.state.step_in_epoch:
            loader = accelerator.skip_first_batches(loader, self.state.step_in_epoch)
        # accelerate's loaders push their own epoch counter into the sampler at every iteration (and the loader of
        # skip_first_batches starts it at 0): set it on the loader that is iterated.
        loader.set_epoch(epoch)
        if not self.state.step_in_epoch or not self.state.epoch_loss_sums:  # a new epoch (or an older checkpoint)
            self.state.epoch_loss_sums = {"loss": 0.0, "smooth_label_loss": 0.0, "attention_loss": 0.0,
                                          **({"distill_loss": 0.0} if self.teacher is not None else {})}
            self.state.epoch_steps = 0
        sums = self.state.epoch_loss_sums
        progress = tqdm(loader, desc=f"epoch {epoch + 1}/{self.num_epochs}", initial=self.state.step_in_epoch,
                        total=len(self.train_loader), disable=not accelerator.is_local_main_process, leave=False)
        for batch in progress:
            outputs = self.train_step(self.model_inputs(batch))
            self.state.step_in_epoch += 1
            for key in sums:
                value = getattr(outputs, key, None)
                if value is not None:
                    sums[key] += float(value.detach())  # also waits for the device: step_times are real
            self.state.epoch_steps += 1
            self.step_times.append(time.perf_counter())
            if accelerator.sync_gradients:
                self.state.global_step += 1
                if self.ema is not None:
                    self.ema.update(accelerator.unwrap_model(self.model), step=self.state.global_step)
                if self.state.global_step % 10 == 0:
                    accelerator.log({"train/loss": float(outputs.loss.detach()),
                                     "train/lr": self.scheduler.get_last_lr()[0]}, step=self.state.global_step)
                progress.set_postfix(loss=f"{float(outputs.loss.detach()):.3f}")
                if config.checkpoint_every and self.state.global_step % config.checkpoint_every == 0:
                    self.save_checkpoint()
                if (self.interrupted or (config.max_steps and self.state.global_step >= config.max_steps)
                        or self.reached_train_steps()):
                    break
        progress.close()
        return {f"train_{k}": v / max(self.state.epoch_steps, 1) for k, v in sums.items() if v or k == "loss"}

    def setup(self) -> None:
        """Run folder, data, model, loaders, optimizer and scheduler: everything before the first step."""
        self.prepare_run_folder()
        self.load_data()
        self.build_model()
        self.teacher = build_teacher(self)
        self.build_loaders()
        self.build_optimization()

    def run(self) -> dict[str, Any]:
        config, accelerator, state = self.config, self.accelerator, self.state
        started = time.time()
        self.setup()
        if config.resume:
            self.load_checkpoint()
        accelerator.init_trackers("fer-mek", config={k: v for k, v in dataclasses.asdict(config).items()
                                                     if isinstance(v, (int, float, str, bool))})
        if self.tracker != config.log_with:
            self.print(f"note: tensorboard is not installed; training curves go to {TRAINING_CURVES} only")
        self.print(self.describe())
        self.warn_single_thread()
        self.note_skipped_items()

        # Ctrl-C and SIGTERM (a scheduler's stop, `kill`): finish the step, save a checkpoint, exit.
        stops = (signal.SIGINT, signal.SIGTERM) if accelerator.is_main_process else ()
        previous = {signum: signal.signal(signum, self._on_interrupt) for signum in stops}
        try:
            while state.epoch < self.num_epochs and not self.interrupted and not self.stopped_early():
                epoch = state.epoch
                train_stats = self.train_epoch(epoch)
                if self.interrupted:
                    break
                # --train-steps cuts the last epoch: that epoch is finished.
                epoch_finished = state.step_in_epoch >= len(self.train_loader) or self.reached_train_steps()
                if not epoch_finished:  # --max-steps reached inside the epoch
                    self.save_checkpoint()
                    break
                row = {"epoch": epoch + 1, **train_stats, "lr": self.scheduler.get_last_lr()[0]}
                if self.validates:
                    self.end_epoch_with_validation(epoch, row)
                else:
                    # No validation split: nothing is selected; the weights of the last epoch are the run's.
                    state.history.append(row)
                    state.best_epoch = epoch + 1
                    self.print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}")
                state.epoch, state.step_in_epoch = epoch + 1, 0
                self.save_checkpoint()
                if self.stopped_early():
                    self.print(f"early stopping: no {config.select_metric} gain for "
                               f"{config.early_stopping_patience} epochs")
                    break
                if config.max_steps and state.global_step >= config.max_steps:
                    break
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self.interrupted:
            self.save_checkpoint()
            self.print(f"interrupted: checkpoint saved in {self.run_dir / CHECKPOINT}; continue with --resume")
            accelerator.end_training()
            return {"interrupted": True, "signal": signal.Signals(self.stop_signal or signal.SIGINT).name}
        if state.best_epoch < 0:
            # No epoch finished (--max-steps inside the first epoch): nothing was selected, nothing is reported.
            accelerator.end_training()
            return {"finished": False, "global_step": state.global_step}
        self.save_model(LAST)
        if not self.validates:
            # The final weights are the reported ones; best/ holds them too, so that every consumer of a run's
            # best/ (evaluation, publishing: fer_mek.runs.load_run) finds them. results.json says so.
            self.save_model(BEST)
        results = self.finish(time.time() - started)
        accelerator.end_training()
        return results

    def end_epoch_with_validation(self, epoch: int, row: dict[str, Any]) -> bool:
        """Evaluate on validation, record the epoch, keep best/ on improvement; whether it improved."""
        config, state = self.config, self.state
        val = self.evaluate("validation")
        row.update({f"val_{k}": val[k] for k in ("accuracy", "mean_class_accuracy", "macro_f1")})
        state.history.append(row)
        self.accelerator.log({k.replace("val_", "val/"): v for k, v in row.items() if k.startswith("val_")},
                             step=state.global_step)
        if config.scheduler == "plateau":  # torch's ReduceLROnPlateau.step(metric), once per epoch
            self.scheduler.step_metric(val[config.plateau_metric])
        improved = val[config.select_metric] > state.best_metric
        if improved:
            state.best_metric, state.best_epoch = val[config.select_metric], epoch + 1
            state.epochs_without_improvement = 0
            self.save_model(BEST)
        else:
            state.epochs_without_improvement += 1
        self.print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  val acc {val['accuracy']:.4f}  "
                   f"val mean-class acc {val['mean_class_accuracy']:.4f}" + ("  (best)" if improved else ""))
        return improved

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        if self.interrupted:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.interrupted, self.stop_signal = True, signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: finishing the current step, saving a checkpoint, then exiting (Ctrl-C again to abort)",
              file=sys.stderr)

    def note_skipped_items(self) -> None:
        """Say on the console what --skip-bad left out (results.json lists every item under dataset.skipped)."""
        skipped = self.data_metadata.get("skipped") or []
        if skipped:
            first = skipped[0]
            where = f"{first.get('file')}" + (f", line {first['line']}" if first.get("line") is not None else "")
            self.print(f"note: {len(skipped)} bad item(s) skipped (--skip-bad), e.g. {where}: {first.get('reason')}; "
                       f"all are listed in {self.run_dir / RESULTS} under dataset.skipped")

    def use_cpu_cores(self) -> int:
        """On a CPU, give torch this process's share of the cores (``accelerate launch`` sets one thread unless told
        otherwise; :func:`fer_mek.environment.cpu_threads_of_run`; the count shows in the start line); returns the
        count before, to restore."""
        before = torch.get_num_threads()
        threads = cpu_threads_of_run(self.accelerator.num_processes)
        if self.accelerator.device.type == "cpu" and threads is not None:
            torch.set_num_threads(threads)
        return before

    def warn_single_thread(self) -> None:
        """Fewer torch threads than this process's share of the cores (OMP_NUM_THREADS, or a caller's
        torch.set_num_threads): said once, since on a CPU it halves (or worse) the speed without a word."""
        if self.accelerator.device.type != "cpu":
            return
        spare = cpu_threads_per_process(self.accelerator.num_processes)
        if torch.get_num_threads() < spare:
            self.print(f"note: {torch.get_num_threads()} CPU thread(s) per process but {spare} core(s) available "
                       f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); unset OMP_NUM_THREADS to use "
                       "them all")

    def describe(self) -> str:
        from ..finetune import describe_init

        c = self.config
        counts = ", ".join(f"{n} {k}" for k, n in zip(self.label_names, self.class_counts["train"], strict=True))
        validation = f"{len(self.dataset['validation'])} val" if self.validates else "no validation split"
        length = (f"{c.train_steps} steps ({self.num_epochs} epochs of up to {self.steps_per_epoch})" if c.train_steps
                  else f"{self.num_epochs} epochs x {self.steps_per_epoch} steps")
        return (f"fer-mek training: {c.method} on {c.source} ({len(self.dataset['train'])} train / "
                f"{validation} / {len(self.dataset['test'])} test), {c.backbone} "
                f"(init {describe_init(self.init_report)}), {c.image_size}px, {length}, "
                f"lr {self.lr:.2e}, {self.accelerator.num_processes} process(es) on {self.accelerator.device} "
                f"({torch.get_num_threads()} CPU threads each), "
                f"mixed precision {self.mixed_precision} ({self.mixed_precision_reason})\ntrain classes: {counts}"
                + (f"\n{self.teacher.describe()}; loss {distill_formula(c)}" if self.teacher is not None else ""))

    def finish(self, train_seconds: float) -> dict[str, Any]:
        """Evaluate the chosen checkpoint on validation and, once, on test; write results, plots and summary."""
        from .. import MEKForImageClassification
        from ..figures import plot_confusion_matrix, plot_training_curves
        from ..io import writing
        from ..metrics import format_metrics_table

        accelerator, state, config = self.accelerator, self.state, self.config
        # The reported checkpoint: best/ (chosen on validation), or without a validation split the final weights
        # (last/; best/ holds the same weights).
        reported = BEST if self.validates else LAST
        # Contiguous, as fer_mek.evaluation and users load it: the reported numbers are theirs to the last bit.
        best = MEKForImageClassification.from_pretrained(self.run_dir / reported).to(accelerator.device)
        val = self.evaluate("validation", best) if self.validates else None
        test = self.evaluate("test", best)
        if self.validates:
            selection = {"metric": config.select_metric, "best_epoch": state.best_epoch, "checkpoint": BEST,
                         "ema": self.ema is not None}
        else:
            selection = {"metric": None, "best_epoch": None, "final_epoch": state.best_epoch, "checkpoint": LAST,
                         "ema": self.ema is not None, "reason": NO_VALIDATION_REASON}
        dataset = {"source": config.source, "root": config.data_root, **self.data_metadata,
                   "val_split": config.val_split, "val_fraction": config.val_fraction if self.validates else None,
                   "split_seed": config.split_seed}
        if config.source == "fer2013":
            dataset["fer2013_test"] = config.fer2013_test
            if config.fer2013_val:
                dataset["fer2013_val"] = config.fer2013_val
                dataset["validation"] = f"Usage == {config.fer2013_val}"
        if config.epoch_size:
            dataset["epoch_size"] = config.epoch_size
        results = {
            "run": self.run_dir.name,
            "recipe": self.config.recipe,
            "method": self.config.method,
            "dataset": dataset,
            "label_names": self.label_names,
            "class_counts": self.class_counts,
            "balance_weights": best.config.get_balance_weights(),
            "init": self.init_report,
            **({"teacher": teacher_record(self)} if self.teacher is not None else {}),
            "selection": selection,
            "validation": val,
            "test": test,
            "history": state.history,
            "config": dataclasses.asdict(self.config),
            "environment": {**versions(), "num_processes": accelerator.num_processes,
                            "device": str(accelerator.device), "cpu_threads": torch.get_num_threads(),
                            "mixed_precision": self.mixed_precision,
                            "mixed_precision_reason": self.mixed_precision_reason,
                            "tracker": self.tracker, "platform": platform.platform()},
            "train_seconds": round(train_seconds, 1),
        }
        if accelerator.is_main_process:
            with writing(self.run_dir, "the results and figures in"):
                write_results(self.run_dir, results)
                plot_confusion_matrix(test["confusion_matrix"], self.label_names, self.run_dir / CONFUSION_MATRIX,
                                      title=f"{self.config.source} test, epoch {state.best_epoch}")
                plot_training_curves(state.history, self.run_dir / TRAINING_CURVES,
                                     best_epoch=state.best_epoch if self.validates else None)
            self.print("\n" + "=" * 72)
            if val is not None:
                self.print(f"run {self.run_dir} — best epoch {state.best_epoch} of {len(state.history)} "
                           f"(on validation {self.config.select_metric}); {train_seconds / 60:.1f} min")
                self.print(f"validation: accuracy {val['accuracy']:.4f}, mean-class accuracy "
                           f"{val['mean_class_accuracy']:.4f}")
                self.print("test (evaluated once, on the chosen checkpoint):")
            else:
                self.print(f"run {self.run_dir} — {len(state.history)} epochs, {state.global_step} steps, no "
                           f"validation split: the final checkpoint is reported; {train_seconds / 60:.1f} min")
                self.print("test (evaluated once, on the final checkpoint):")
            self.print(format_metrics_table(test, self.label_names))
            if self.config.source == "synthetic":
                self.print("(synthetic expression set: these numbers say nothing about real FER accuracy)")
            self.print(f"model: {self.run_dir / BEST}   results: {self.run_dir / RESULTS}")
            self.print("=" * 72)
        return results


def _tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None
