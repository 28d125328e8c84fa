"""Quality-tuning (Emu recipe) of a latent-diffusion UNet on the curated set, with early stopping.

`train(data_dir, base_model, out_dir, config)` fine-tunes the UNet of a local diffusers
Stable-Diffusion-style directory; VAE and text encoder stay frozen. When it ends, `out_dir` is a
diffusers pipeline directory holding the best checkpoint (EMA weights when EMA is on), with
everything else under `out_dir/training_state/` (paths: ModelDir in pipeline/core/layout.py):

    metrics.jsonl            one row per step: step, train_loss, lr (+ val_loss on evaluations)
    run.json                 config, data, base model, devices, effective batch
    cache/                   latents and caption embeddings, encoded once
    checkpoints/step-N/      unet, ema, optimizer, lr scheduler, grad scaler, trainer state
    latest.json              which checkpoint to resume from (written after the checkpoint)
    best-N/                  the best weights so far (diffusers UNet folder), best.json points to it
    result.json, _SUCCESS    how the run ended

Exact resume: everything random in a step (batch choice, noise, timesteps, caption dropout) is
drawn from generators seeded by (seed, step, micro-batch, process), not from a global RNG, so a
resumed run recomputes exactly the draws an uninterrupted run makes. With the optimiser, LR
scheduler, EMA and grad scaler restored, kill + resume reproduces an uninterrupted run.
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

from photogenic.pipeline.core.layout import TRAINING_STATE, ModelDir
from photogenic.pipeline.core.runio import mark_success, publishing, read_json, write_json_atomic
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
                "bucket_step", "max_aspect", "validation_timesteps", "validation_seed")


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
                 config: TrainConfig, resume: bool = False, progress: bool = True):
        self.data_dir, self.base_model = Path(data_dir), Path(base_model)
        self.out_dir = Path(out_dir)
        self.model_dir = ModelDir(self.out_dir)
        self.state_dir = self.model_dir.training_state
        self.config, self.resume, self.progress = config, resume, progress
        self._check_dirs()

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

    def _setup(self) -> None:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        cfg = self.config
        cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
        device_type = "cpu" if cpu else "cuda"
        self.accelerator = Accelerator(
            mixed_precision=_resolve_precision(cfg.mixed_precision, device_type), cpu=cpu)
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
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.size_multiple = self.vae_factor * 2 ** (len(unet.config.block_out_channels) - 1)
        self.resolution = cfg.resolution or unet.config.sample_size * self.vae_factor
        self.ema = None
        if cfg.use_ema:
            self.ema = EMAModel(unet.parameters(), decay=cfg.ema_decay,
                                model_cls=UNet2DConditionModel, model_config=unet.config)
            self.ema.to(acc.device)
        optimizer = torch.optim.AdamW(
            unet.parameters(), lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
            weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
        from diffusers.optimization import get_scheduler

        # Not passed to accelerator.prepare: it would step the schedule once per process.
        self.lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer,
                                          num_warmup_steps=cfg.lr_warmup_steps,
                                          num_training_steps=cfg.max_steps)
        self.unet, self.optimizer = acc.prepare(unet, optimizer)
        self.encoder = Encoder(self.vae, self.text_encoder, self.tokenizer, acc.device)

    def _load_data(self) -> None:
        cfg = self.config
        step = cfg.bucket_step or (64 if self.resolution >= 512 else self.size_multiple)
        if step % self.size_multiple:
            raise TrainError(f"bucket_step {step} must be a multiple of {self.size_multiple} "
                             "(VAE and UNet downsampling)")
        try:
            splits = read_examples(self.data_dir)
            self.buckets = make_buckets(self.resolution, step, cfg.max_aspect)
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
        self.cache = LatentCache(self.model_dir.latent_cache, fingerprint)

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

    def _diffusion_loss(self, latents, texts, noise, timesteps, unet=None):
        import torch.nn.functional as F

        sched = self.noise_scheduler
        noisy = sched.add_noise(latents, noise, timesteps)
        if sched.config.prediction_type == "v_prediction":
            target = sched.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        with self.accelerator.autocast():
            pred = (unet or self.unet)(noisy, timesteps, texts).sample
        return F.mse_loss(pred.float(), target.float())

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
                                    timesteps.to(acc.device))

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
            self.ema.step(self.unet.parameters())
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

    def _checkpoint_dir(self, step: int) -> Path:
        return self.model_dir.checkpoint(step)

    def save_checkpoint(self, step: int, state: dict[str, Any]) -> None:
        import torch
        from safetensors.torch import save_file

        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            unet = acc.unwrap_model(self.unet)

            def write(tmp: Path) -> None:
                save_file({k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()},
                          tmp / "unet.safetensors")
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
                torch.save(self.lr_scheduler.state_dict(), tmp / "lr_scheduler.pt")
                if self.ema is not None:
                    torch.save(self.ema.state_dict(), tmp / "ema.pt")
                if acc.scaler is not None:
                    torch.save(acc.scaler.state_dict(), tmp / "scaler.pt")
                (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))

            final = self._checkpoint_dir(step)
            with publishing(final) as tmp:
                write(tmp)
            write_json_atomic({"checkpoint": final.name, "step": step},
                              self.model_dir.latest)
            self._prune_checkpoints()
        acc.wait_for_everyone()

    def _prune_checkpoints(self) -> None:
        folder = self.model_dir.checkpoints
        done = sorted(p for p in folder.iterdir() if p.name.startswith("step-"))
        for old in done[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self) -> dict[str, Any]:
        import torch
        from safetensors.torch import load_file

        latest = read_json(self.model_dir.latest, strict=True)
        if latest is None:
            return {}
        folder = self.model_dir.checkpoints / latest["checkpoint"]
        acc = self.accelerator
        acc.unwrap_model(self.unet).load_state_dict(load_file(folder / "unet.safetensors"))
        device = acc.device
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device))
        self.lr_scheduler.load_state_dict(torch.load(folder / "lr_scheduler.pt"))
        if self.ema is not None:
            self.ema.load_state_dict(torch.load(folder / "ema.pt", map_location=device))
            self.ema.to(device)
        if acc.scaler is not None and (folder / "scaler.pt").exists():
            acc.scaler.load_state_dict(torch.load(folder / "scaler.pt"))
        return json.loads((folder / "trainer_state.json").read_text())

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
            for old in self.state_dir.glob("best-*"):
                if old.name != best and old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    # -- metrics --

    def _log(self, row: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with open(self.model_dir.metrics, "a") as fh:
                fh.write(json.dumps(row) + "\n")

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
            old = saved["config"]
            changed = [k for k in RESUME_FIXED if old.get(k) != getattr(self.config, k)]
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
        from tqdm import tqdm

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._setup()
        self._write_run_info()
        self._fill_cache()
        cfg, acc = self.config, self.accelerator
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
            write_pipeline(self.base_model, self.state_dir / best["dir"], self.out_dir)
            write_json_atomic(asdict(result), self.model_dir.result)
            write_summary(self.out_dir, self._stage_summary(result))
            mark_success(self.state_dir)
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
          progress: bool = True) -> TrainResult:
    """Quality-tune `base_model` on the export in `data_dir`; `out_dir` becomes the new model.

    On a finished run, `resume=True` only rewrites the output pipeline (nothing left to train)
    unless `config.max_steps` was raised.
    """
    return Trainer(data_dir, base_model, out_dir, config or TrainConfig(), resume, progress).run()
