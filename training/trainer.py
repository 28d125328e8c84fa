"""Quality-tuning (Emu recipe) of a latent-diffusion UNet on the curated set, with early stopping.

`train(data_dir, base_model, out_dir, config)` fine-tunes the UNet of a local diffusers
Stable-Diffusion-style directory; VAE and text encoder stay frozen. When it ends, `out_dir` is a
diffusers pipeline directory holding the best checkpoint (EMA weights when EMA is on) plus the
run's records; what only a resume needs lives OUTSIDE it, in the training-state folder
(default OUT/../training_state/OUT-NAME/, e.g. RUN/training_state/model/; paths: ModelDir and
TrainingStateDir in pipeline/core/layout.py), so shipping or uploading the model never ships
optimizer state or the latent cache:

    OUT/training_state/      the records (ship with the model; eval and the report read them)
        run.json             config, data, base model, devices, effective batch, state folder
        metrics.jsonl        one row per step: step, train_loss, lr (+ val_loss on evaluations)
        best.json            the best step and its validation loss
        best-N/              while training: the best weights so far (diffusers UNet folder);
                             becomes OUT/unet when the run ends
        result.json, _SUCCESS  how the run ended
    STATE/checkpoints/step-N/  accelerate `save_state`: UNet, optimizer, grad scaler, RNG states,
                             and (register_for_checkpointing) the trainer's state, the LR
                             scheduler and the EMA; FSDP/DeepSpeed shard it their way
    STATE/latest.json        which checkpoint to resume from (written after the checkpoint)
    STATE/cache/             latents and caption embeddings, encoded once
    STATE/logs/              tracker logs (`report_to`: tensorboard, wandb)

Exact resume: everything random in a step (batch choice, noise, timesteps, caption dropout) is
drawn from generators seeded by (seed, step, micro-batch, process), not from a global RNG, so a
resumed run recomputes exactly the draws an uninterrupted run makes. With `load_state` restoring
the optimiser, LR scheduler, EMA and grad scaler, kill + resume reproduces an uninterrupted run
bit for bit. Checkpoints are built under a temp name and renamed into place, then latest.json
is rewritten, so a kill at any moment leaves a loadable latest checkpoint.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from photogenic.pipeline.core.layout import TRAINING_STATE, ModelDir, TrainingStateDir
from photogenic.pipeline.core.runio import (mark_success, publishing, read_json, replace_dir,
                                            write_json_atomic)
from photogenic.pipeline.core.summary import StageSummary, write_summary
from photogenic.pipeline.core.config.training import TrainConfig
from photogenic.training.data import (
    BatchStream,
    DataError,
    Encoder,
    LatentCache,
    assign_buckets,
    cache_fingerprint,
    load_pixels,
    make_buckets,
    nearest_bucket,
    read_examples,
)

log = logging.getLogger(__name__)
STATE = TRAINING_STATE  # training/cli.py finds a run's state by it
# Changing these between a run and its resume would not continue the same run.
RESUME_FIXED = ("batch_size", "micro_batch_size", "noise_offset", "learning_rate", "lr_scheduler",
                "lr_warmup_steps", "adam_beta1", "adam_beta2", "adam_weight_decay",
                "adam_epsilon", "use_ema", "ema_decay", "caption_dropout", "seed", "resolution",
                "bucket_step", "max_aspect", "validation_timesteps", "validation_seed",
                "buckets", "snr_gamma")
CHECKPOINT_INFO = "trainer_state.json"  # a readable copy of the trainer's state in a checkpoint


class TrainError(RuntimeError):
    """The run cannot start or continue; the message says why and what to do."""


@dataclass
class TrainResult:
    out_dir: str
    steps: int
    best_step: int
    best_val_loss: float | None
    stopped_early: bool
    metrics: str


# --- small helpers ----------------------------------------------------------------------------


def step_generator(*parts: int):
    import torch

    # Mix the parts into one 63-bit seed; a CPU generator so draws match on every device.
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p) + 1) % (2**63 - 1)
    return torch.Generator("cpu").manual_seed(seed)


class RunState:
    """The trainer's own state (step, best so far, early-stopping counters). Registered with
    `accelerator.register_for_checkpointing`, so save_state / load_state carry it."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"json": json.dumps(self.values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = json.loads(state["json"])


def _tracker_config(config: TrainConfig) -> dict[str, Any]:
    # Trackers (tensorboard hparams) take scalars only.
    out = {}
    for key, value in config.model_dump(mode="json").items():
        if isinstance(value, list):
            value = ",".join(map(str, value))
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
    return out


def _resolve_precision(setting: str, device_type: str) -> str:
    import torch

    if setting != "auto":
        return setting
    if device_type != "cuda":
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


# --- the run ----------------------------------------------------------------------------------


class Trainer:
    def __init__(self, data_dir: str | Path, base_model: str | Path, out_dir: str | Path,
                 config: TrainConfig, resume: bool = False, progress: bool = True,
                 state_dir: str | Path | None = None):
        self.data_dir, self.base_model = Path(data_dir), Path(base_model)
        self.out_dir = Path(out_dir)
        self.model_dir = ModelDir(self.out_dir)
        self.records = self.model_dir.training_state  # ships with the model
        self.config, self.resume, self.progress = config, resume, progress
        self.state = TrainingStateDir(self._state_root(state_dir))  # never ships
        self._check_dirs()

    def _state_root(self, state_dir: str | Path | None) -> Path:
        if state_dir is not None:
            return Path(state_dir)
        saved = read_json(self.model_dir.run_info, strict=True) if self.resume else None
        # A resume finds the state where the run put it (unless the run folder moved since).
        if saved and saved.get("state_dir") and Path(saved["state_dir"]).is_dir():
            return Path(saved["state_dir"])
        return self.model_dir.state.root

    # -- setup --

    def _check_dirs(self) -> None:
        if not ModelDir(self.base_model).model_index.exists():
            raise TrainError(f"base model {self.base_model} is not a diffusers directory "
                             "(no model_index.json); `photogenic train --make-tiny-base DIR` "
                             "writes a tiny one for tests")
        if self.out_dir.resolve() == self.base_model.resolve():
            raise TrainError("--out must differ from --base-model")
        has_state = self.model_dir.run_info.exists()
        if has_state and not self.resume:
            raise TrainError(f"{self.out_dir} already holds a training run: pass --resume to "
                             "continue it, or choose another --out")
        if not has_state and self.model_dir.model_index.exists():
            raise TrainError(f"{self.out_dir} already holds a model that this trainer did not "
                             "write; choose another --out")
        if self.resume and ((self.records / "checkpoints").exists()
                            or (self.records / "latest.json").exists()):
            raise TrainError(f"{self.out_dir} was trained by an older version of the trainer "
                             "(checkpoints inside the model folder, not accelerate states): it "
                             "cannot be resumed; start a new run in another --out")
        state_root = self.state.root.resolve()
        if self.out_dir.resolve() in (state_root, *state_root.parents):
            raise TrainError(f"the training state folder {self.state.root} must be outside "
                             f"the model folder {self.out_dir} (it must not ship with the model)")

    def _setup(self) -> None:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import (ProjectConfiguration, is_tensorboard_available,
                                      is_wandb_available, set_seed)

        cfg = self.config
        cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
        device_type = "cpu" if cpu else "cuda"
        try:
            self.trackers = cfg.trackers({"tensorboard": bool(is_tensorboard_available()),
                                          "wandb": bool(is_wandb_available())})
        except ValueError as err:
            raise TrainError(str(err)) from None
        project = ProjectConfiguration(project_dir=str(self.state.root),
                                       logging_dir=str(self.state.logs))
        self.accelerator = Accelerator(
            mixed_precision=_resolve_precision(cfg.mixed_precision, device_type), cpu=cpu,
            log_with=self.trackers or None, project_config=project)
        acc = self.accelerator
        set_seed(cfg.seed)
        world = acc.num_processes
        if cfg.batch_size % (cfg.micro_batch_size * world):
            raise TrainError(f"batch_size {cfg.batch_size} is not a multiple of "
                             f"micro_batch_size {cfg.micro_batch_size} x {world} device(s)")
        self.accum = cfg.batch_size // (cfg.micro_batch_size * world)
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            acc.mixed_precision, torch.float32)
        self._load_models()
        self._load_data()

    def _load_models(self) -> None:
        import torch
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from diffusers.training_utils import EMAModel
        from transformers import AutoTokenizer, CLIPTextModel

        base, cfg, acc = self.base_model, self.config, self.accelerator
        index = json.loads(ModelDir(base).model_index.read_text())
        missing = [c for c in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
                   if c not in index]
        if missing or "text_encoder_2" in index:
            raise TrainError(f"{base}: expected a Stable Diffusion 1.x/2.x-style pipeline "
                             f"(unet, vae, text_encoder, tokenizer, scheduler); "
                             f"{'missing ' + str(missing) if missing else 'SDXL is not supported'}")
        self.noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
        self.tokenizer = AutoTokenizer.from_pretrained(base / "tokenizer")
        self.text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
        self.vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
        # The VAE stays in fp32 (fp16 VAEs can overflow; latents are encoded once anyway).
        self.vae.requires_grad_(False).eval().to(acc.device)
        self.text_encoder.requires_grad_(False).eval().to(acc.device)
        if self.weight_dtype != torch.float32:
            self.text_encoder.to(dtype=self.weight_dtype)
        unet.train()
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.size_multiple = self.vae_factor * 2 ** (len(unet.config.block_out_channels) - 1)
        self.resolution = cfg.resolution or unet.config.sample_size * self.vae_factor
        self.ema = None
        # offload_ema: the EMA lives in CPU memory and visits the device for each update.
        self.ema_device = torch.device("cpu") if cfg.offload_ema else acc.device
        if cfg.use_ema:
            self.ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, foreach=cfg.foreach_ema,
                                model_cls=UNet2DConditionModel, model_config=unet.config)
            self.ema.to(self.ema_device)
            if cfg.offload_ema and acc.device.type == "cuda":
                self.ema.pin_memory()
        optimizer = torch.optim.AdamW(
            unet.parameters(), lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
            weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
        from diffusers.optimization import get_scheduler

        # Not passed to accelerator.prepare: it would step the schedule once per process.
        self.lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer,
                                          num_warmup_steps=cfg.lr_warmup_steps,
                                          num_training_steps=cfg.max_steps)
        self.unet, self.optimizer = acc.prepare(unet, optimizer)
        # save_state / load_state carry these too (custom_checkpoint_0, 1, 2: a fixed order).
        self.run_state = RunState()
        acc.register_for_checkpointing(self.run_state, self.lr_scheduler)
        if self.ema is not None:
            acc.register_for_checkpointing(self.ema)
        self.encoder = Encoder(self.vae, self.text_encoder, self.tokenizer, acc.device)

    def _load_data(self) -> None:
        cfg = self.config
        step = cfg.bucket_step or (64 if self.resolution >= 512 else self.size_multiple)
        if cfg.bucket_sizes:  # listed sizes ("512x512,576x448,..."), diffusers/SimpleTuner style
            bad = [f"{w}x{h}" for w, h in cfg.bucket_sizes
                   if w % self.size_multiple or h % self.size_multiple]
            if bad:
                raise TrainError(f"buckets {', '.join(bad)}: sides must be multiples of "
                                 f"{self.size_multiple} for this model (VAE and UNet downsampling)")
        elif step % self.size_multiple:
            raise TrainError(f"bucket_step {step} must be a multiple of {self.size_multiple} "
                             "(VAE and UNet downsampling)")
        try:
            splits = read_examples(self.data_dir)
            self.buckets = cfg.bucket_sizes or make_buckets(self.resolution, step, cfg.max_aspect)
        except DataError as err:
            raise TrainError(str(err)) from None
        self.train_set, self.val_set = splits["train"], splits["validation"]
        if not self.val_set:
            log.warning("no validation split in %s: early stopping is off and the last "
                        "weights are kept", self.data_dir)
        self.train_bucket = {i: nearest_bucket(e.width, e.height, self.buckets)
                             for i, e in enumerate(self.train_set)}
        self.val_bucket = {i: nearest_bucket(e.width, e.height, self.buckets)
                           for i, e in enumerate(self.val_set)}
        self.groups = assign_buckets(self.train_set, self.buckets)
        self.stream = BatchStream(self.groups, cfg.micro_batch_size, cfg.seed)
        fingerprint = cache_fingerprint(str(self.base_model), self.resolution, self.buckets)
        self.cache = LatentCache(self.state.latent_cache, fingerprint)

    def _fill_cache(self) -> None:
        acc = self.accelerator
        if not self.config.latent_cache:  # encode every batch on the fly (slower; for bench)
            self.empty_text = self.encoder.text([""])[0]
            return
        rank, world = acc.process_index, acc.num_processes
        for examples, buckets in ((self.train_set, self.train_bucket),
                                  (self.val_set, self.val_bucket)):
            mine = [i for i in range(len(examples)) if i % world == rank]
            self.cache.fill(examples, buckets, self.encoder, mine,
                            progress=self.progress and acc.is_main_process)
        acc.wait_for_everyone()
        self.empty_text = self.cache.empty_text().to(acc.device)

    # -- batches --

    def _batch(self, examples, buckets, indices: list[int]):
        """(latents, text embeddings) on the device, from the cache or encoded now."""
        import torch

        if self.config.latent_cache:
            pairs = [self.cache.load(examples[i], buckets[i]) for i in indices]
            latents = torch.stack([p[0] for p in pairs])
            texts = torch.stack([p[1] for p in pairs])
            return latents.to(self.accelerator.device), texts.to(self.accelerator.device)
        bucket = buckets[indices[0]]
        pixels = torch.stack([load_pixels(examples[i].path, bucket) for i in indices])
        return self.encoder.latents(pixels), self.encoder.text([examples[i].text for i in indices])

    def _diffusion_loss(self, latents, texts, noise, timesteps, unet=None, snr_gamma=None):
        import torch
        import torch.nn.functional as F

        sched = self.noise_scheduler
        noisy = sched.add_noise(latents, noise, timesteps)
        if sched.config.prediction_type == "v_prediction":
            target = sched.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        with self.accelerator.autocast():
            pred = (unet or self.unet)(noisy, timesteps, texts).sample
        if snr_gamma is None:
            return F.mse_loss(pred.float(), target.float())
        # Min-SNR-gamma weighting, as diffusers' examples/text_to_image/train_text_to_image.py:
        # per-sample MSE x min(SNR, gamma) / SNR (epsilon) or / (SNR + 1) (v-prediction).
        from diffusers.training_utils import compute_snr

        snr = compute_snr(sched, timesteps)
        weights = torch.stack([snr, snr_gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0]
        if sched.config.prediction_type == "v_prediction":
            weights = weights / (snr + 1)
        else:
            weights = weights / snr
        loss = F.mse_loss(pred.float(), target.float(), reduction="none")
        return (loss.mean(dim=list(range(1, loss.ndim))) * weights).mean()

    def _micro_step(self, step: int, micro: int):
        import torch

        cfg, acc = self.config, self.accelerator
        j = (step * self.accum + micro) * acc.num_processes + acc.process_index
        latents, texts = self._batch(self.train_set, self.train_bucket, self.stream[j])
        gen = step_generator(cfg.seed, step, micro, acc.process_index)
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=gen)
        if cfg.noise_offset:
            # Emu/SimpleTuner noise offset: per-channel constant shift, lets the model learn
            # very dark and very bright images.
            noise += cfg.noise_offset * torch.randn((b, latents.shape[1], 1, 1), generator=gen)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (b,),
                                  generator=gen)
        drop = torch.rand(b, generator=gen) < cfg.caption_dropout
        if drop.any():
            texts = texts.clone()
            texts[drop.to(texts.device)] = self.empty_text.to(texts.dtype)
        return self._diffusion_loss(latents, texts, noise.to(acc.device),
                                    timesteps.to(acc.device), snr_gamma=cfg.snr_gamma)

    def _train_step(self, step: int) -> float:
        acc, cfg = self.accelerator, self.config
        total = 0.0
        for micro in range(self.accum):
            last = micro == self.accum - 1
            ctx = acc.no_sync(self.unet) if not last and acc.num_processes > 1 else nullcontext()
            with ctx:
                loss = self._micro_step(step, micro)
                acc.backward(loss / self.accum)
            total += loss.detach().item() / self.accum
        if acc.sync_gradients and cfg.max_grad_norm:
            acc.clip_grad_norm_(self.unet.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            offload = cfg.offload_ema and self.ema_device != acc.device
            if offload:
                self.ema.to(acc.device, non_blocking=True)
            self.ema.step(self.unet.parameters())
            if offload:
                self.ema.to(self.ema_device, non_blocking=True)
        return total

    # -- validation --

    def validation_loss(self) -> float | None:
        """Mean diffusion loss on the held-out split at fixed timesteps with fixed noise.

        Uses the weights the run would ship (EMA when on); no noise offset, no caption dropout.
        The same images, timesteps and noise every time, so values are comparable across steps.
        """
        import torch

        if not self.val_set:
            return None
        acc, cfg = self.accelerator, self.config
        n_t = cfg.validation_timesteps
        total_t = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.linspace(0, total_t - 1, n_t).round().long()
        totals = torch.zeros(2, device=acc.device)
        # The bare module, not the DDP wrapper: ranks may run different numbers of forwards here.
        unet = acc.unwrap_model(self.unet)
        with self._shipped_weights(), torch.no_grad():
            unet.eval()
            for i in range(acc.process_index, len(self.val_set), acc.num_processes):
                latent, text = self._batch(self.val_set, self.val_bucket, [i])
                gen = step_generator(cfg.validation_seed, i)
                noise = torch.randn((n_t, *latent.shape[1:]), generator=gen).to(acc.device)
                loss = self._diffusion_loss(latent.expand(n_t, -1, -1, -1),
                                            text.expand(n_t, -1, -1), noise,
                                            timesteps.to(acc.device), unet)
                totals += torch.stack([loss.detach().float() * n_t,
                                       torch.tensor(float(n_t), device=acc.device)])
            unet.train()
        totals = acc.reduce(totals, reduction="sum")
        return float(totals[0] / totals[1])

    def _shipped_weights(self):
        import contextlib

        ema, params = self.ema, list(self.unet.parameters())

        @contextlib.contextmanager
        def swap():
            if ema is None:
                yield
                return
            ema.store(params)
            ema.copy_to(params)
            try:
                yield
            finally:
                ema.restore(params)

        return swap()

    # -- checkpoints --

    def save_checkpoint(self, step: int, state: dict[str, Any]) -> None:
        """`accelerator.save_state` into a temp folder, renamed into place, then latest.json.

        Every process writes its part (its RNG state; FSDP/DeepSpeed shards) into the same temp
        folder; the main process publishes it once all are done."""
        acc = self.accelerator
        self.run_state.values = dict(state)
        final = self.state.checkpoint(step)
        tmp = final.with_name(f".{final.name}.tmp-save")  # one name on every process
        acc.wait_for_everyone()
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / CHECKPOINT_INFO).write_text(json.dumps(state, indent=2))
            replace_dir(tmp, final)
            write_json_atomic({"checkpoint": final.name, "step": step}, self.state.latest)
            self._prune_checkpoints()
        acc.wait_for_everyone()

    def _prune_checkpoints(self) -> None:
        folder = self.state.checkpoints
        done = sorted(p for p in folder.iterdir() if p.name.startswith("step-"))
        for old in done[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def _clear_stale_state(self) -> None:
        """A fresh run in a state folder an earlier run left (its model folder deleted): drop
        that run's checkpoints and logs; the latent cache stays (its names say what it holds)."""
        if not self.accelerator.is_main_process:
            return
        if self.state.latest.exists() or self.state.checkpoints.exists():
            log.warning("starting a new run: removing the old checkpoints in %s", self.state.root)
        self.state.latest.unlink(missing_ok=True)
        for folder in (self.state.checkpoints, self.state.logs):
            shutil.rmtree(folder, ignore_errors=True)

    def load_checkpoint(self) -> dict[str, Any]:
        latest = read_json(self.state.latest, strict=True)
        if latest is None:
            return {}
        folder = self.state.checkpoints / latest["checkpoint"]
        if not folder.is_dir():
            raise TrainError(f"{self.state.latest} names {folder}, which is missing: the "
                             "training state is incomplete; start a new run")
        self.accelerator.load_state(str(folder))
        if self.ema is not None:  # load_state reads onto the CPU
            self.ema.to(self.ema_device)
        return dict(self.run_state.values)

    def save_best(self, step: int, val_loss: float | None) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            with self._shipped_weights():
                unet = acc.unwrap_model(self.unet)
                with publishing(self.model_dir.best_weights(step)) as tmp:
                    unet.save_pretrained(tmp, safe_serialization=True)
            best = self.model_dir.best_weights(step).name
            write_json_atomic({"dir": best, "step": step, "val_loss": val_loss,
                               "ema": self.ema is not None}, self.model_dir.best)
            for old in self.records.glob("best-*"):
                if old.name != best and old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    # -- metrics --

    def _log(self, row: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with open(self.model_dir.metrics, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        if self.trackers:
            values = {k: v for k, v in row.items() if k != "step" and v is not None}
            self.accelerator.log(values, step=row["step"])

    def _truncate_metrics(self, step: int) -> None:
        # Rows past the checkpoint belong to steps the resumed run redoes.
        path = self.model_dir.metrics
        if not path.exists() or not self.accelerator.is_main_process:
            return
        rows = [ln for ln in path.read_text().splitlines()
                if ln.strip() and _safe_step(ln) is not None and _safe_step(ln) <= step]
        path.write_text("".join(r + "\n" for r in rows))

    # -- the loop --

    def _write_run_info(self) -> None:
        run_json = self.model_dir.run_info
        saved = read_json(run_json, strict=True)
        data_fingerprint = self._data_fingerprint()
        if saved is not None:
            old, new = saved["config"], self.config.model_dump(mode="json")
            changed = [k for k in RESUME_FIXED if old.get(k) != new.get(k)]
            if changed:
                raise TrainError(f"--resume with a config that differs from the run's in "
                                 f"{changed}; that would not continue the same run")
            if saved.get("data_fingerprint") not in (None, data_fingerprint):
                raise TrainError(f"--resume with different training data than the run started "
                                 f"with ({self.data_dir}); start a new run in another --out")
        info = {
            "data_fingerprint": data_fingerprint,
            "config": self.config.model_dump(mode="json"),
            "data_dir": str(self.data_dir.resolve()),
            "base_model": str(self.base_model.resolve()),
            "state_dir": str(self.state.root.resolve()),
            "trackers": self.trackers,
            "devices": self.accelerator.num_processes,
            "mixed_precision": self.accelerator.mixed_precision,
            "gradient_accumulation": self.accum,
            "effective_batch": self.config.micro_batch_size * self.accum
            * self.accelerator.num_processes,
            "resolution": self.resolution,
            "buckets": {f"{w}x{h}": len(m) for (w, h), m in self.groups.items()},
            "train_images": len(self.train_set),
            "validation_images": len(self.val_set),
        }
        if self.accelerator.is_main_process:
            write_json_atomic(info, run_json)

    def _data_fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for split, examples in (("train", self.train_set), ("validation", self.val_set)):
            for ex in examples:
                h.update(f"{split}|{ex.key}|{ex.path.stat().st_size}|{ex.text}\n".encode())
        return h.hexdigest()[:16]

    def run(self) -> TrainResult:
        self.records.mkdir(parents=True, exist_ok=True)
        self.state.root.mkdir(parents=True, exist_ok=True)
        self._setup()
        try:
            return self._run()
        finally:
            if self.trackers:
                self.accelerator.end_training()

    def _run(self) -> TrainResult:
        from tqdm import tqdm

        if not self.resume:
            self._clear_stale_state()
        self._write_run_info()
        self._fill_cache()
        cfg, acc = self.config, self.accelerator
        if acc.is_main_process:
            for stale in self.state.checkpoints.glob(".step-*"):  # a killed save's temp folder
                shutil.rmtree(stale, ignore_errors=True)
        acc.wait_for_everyone()
        if self.trackers:
            acc.init_trackers(cfg.tracker_project, config=_tracker_config(cfg))
        state = self.load_checkpoint() if self.resume else {}
        step = state.get("step", 0)
        self._truncate_metrics(step)
        if not state:
            state = {"step": 0, "best_val": None, "best_step": 0, "bad_evals": 0,
                     "stopped_early": False}
            val = self.validation_loss()
            self._log({"step": 0, "val_loss": val})
            state["best_val"] = val
            self.save_best(0, val)
        every_ckpt = cfg.checkpoint_every or cfg.validate_every
        bar = tqdm(total=cfg.max_steps, initial=step, desc="training", unit="step",
                   disable=not (self.progress and acc.is_main_process))
        finished = state["stopped_early"] or step >= cfg.max_steps
        while not finished:
            started = time.perf_counter()
            loss = self._train_step(step)
            step += 1
            loss = float(acc.reduce(_tensor(loss, acc.device), reduction="mean"))
            row = {"step": step, "train_loss": loss, "lr": self.lr_scheduler.get_last_lr()[0],
                   "images_per_s": cfg.batch_size / (time.perf_counter() - started)}
            finished = step >= cfg.max_steps
            if step % cfg.validate_every == 0 or finished:
                row["val_loss"] = self._evaluate(step, state)
                finished = finished or state["stopped_early"]
            self._log(row)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", best=state["best_val"])
            state["step"] = step
            if step % every_ckpt == 0 or finished:
                self.save_checkpoint(step, state)
        bar.close()
        return self._finish(state)

    def _evaluate(self, step: int, state: dict[str, Any]) -> float | None:
        val = self.validation_loss()
        if val is None:  # no held-out split: the last weights are the best we know
            state.update(best_step=step)
            self.save_best(step, None)
            return None
        best = state["best_val"]
        if best is None or val < best - self.config.min_delta:
            state.update(best_val=val, best_step=step, bad_evals=0)
            self.save_best(step, val)
        else:
            state["bad_evals"] += 1
            if state["bad_evals"] >= self.config.patience:
                state["stopped_early"] = True
        return val

    def _stage_summary(self, result: TrainResult) -> StageSummary:
        # The one summary shape (core/summary.py): images in, images trained on, the held-out rest.
        n_train, n_val = len(self.train_set), len(self.val_set)
        return StageSummary(
            stage="train", input_fingerprint=self._data_fingerprint(), rows_in=n_train + n_val,
            rows_out=n_train, by_reason={"validation": n_val} if n_val else {},
            config=self.config.model_dump(mode="json"),
            details={k: v for k, v in asdict(result).items() if k not in ("out_dir", "metrics")})

    def _finish(self, state: dict[str, Any]) -> TrainResult:
        acc = self.accelerator
        acc.wait_for_everyone()
        result = TrainResult(str(self.out_dir), state["step"], state["best_step"],
                             state["best_val"], state["stopped_early"],
                             str(self.model_dir.metrics))
        if acc.is_main_process:
            best = read_json(self.model_dir.best, strict=True)
            best_dir = self.records / best["dir"]
            if best_dir.is_dir():
                write_pipeline(self.base_model, best_dir, self.out_dir)
                # Now OUT/unet: the model folder keeps one copy of the weights.
                shutil.rmtree(best_dir)
            elif not self.model_dir.model_index.exists():
                raise TrainError(f"the best weights {best_dir} are missing and {self.out_dir} "
                                 "holds no pipeline; start a new run")
            write_json_atomic(asdict(result), self.model_dir.result)
            write_summary(self.out_dir, self._stage_summary(result))
            mark_success(self.records)
        acc.wait_for_everyone()
        return result


def _tensor(value: float, device):
    import torch

    return torch.tensor(value, device=device)


def _safe_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def write_pipeline(base_model: Path, unet_dir: Path, out_dir: Path) -> None:
    """Make `out_dir` a diffusers pipeline: the base's frozen parts + the trained UNet.

    Components are copied under temp names and renamed; model_index.json is written last, so a
    folder with a model_index.json is always complete.
    """
    index = json.loads(ModelDir(base_model).model_index.read_text())
    ModelDir(out_dir).model_index.unlink(missing_ok=True)
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        src = unet_dir if name == "unet" else base_model / name
        if src.is_dir():
            with publishing(out_dir / name) as tmp:
                shutil.copytree(src, tmp, dirs_exist_ok=True)
    # Carry the tiny model's "random weights" note: a model tuned from it is no better.
    from photogenic.training.tiny import TINY_MARKER

    if (base_model / TINY_MARKER).exists():
        shutil.copyfile(base_model / TINY_MARKER, out_dir / TINY_MARKER)
    write_json_atomic(index, ModelDir(out_dir).model_index)


def train(data_dir: str | Path, base_model: str | Path, out_dir: str | Path,
          config: TrainConfig | None = None, resume: bool = False,
          progress: bool = True, state_dir: str | Path | None = None) -> TrainResult:
    """Quality-tune `base_model` on the export in `data_dir`; `out_dir` becomes the new model.

    `state_dir`: where checkpoints, the latent cache and tracker logs go (outside `out_dir`);
    None: ModelDir(out_dir).state (OUT/../training_state/OUT-NAME), or on a resume wherever
    the run put them. On a finished run, `resume=True` changes nothing (nothing left to train)
    unless `config.max_steps` was raised.
    """
    return Trainer(data_dir, base_model, out_dir, config or TrainConfig(), resume, progress,
                   state_dir).run()
