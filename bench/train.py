"""Training throughput with and without the latent cache, side by side in one run.

Builds a tiny exported set (real photos) and the tiny random-weight base model, trains the same
steps twice (latents + caption embeddings read from the on-disk cache, vs. VAE + text encoder run
on every batch) and writes images/s per training step and their ratio to bench/results/train.json.

    .venv/bin/python -m bench.train [--steps 30] [--resolution 64 --resolution 128]
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import click  # noqa: E402


def _rates(out: Path) -> list[float]:
    rows = [json.loads(x) for x in (out / "training_state" / "metrics.jsonl").read_text().split("\n")
            if x.strip()]
    rates = [r["images_per_s"] for r in rows if "images_per_s" in r]
    return rates[2:-1]  # skip warm-up steps and the last one (it carries a validation)


def _measure(data: Path, base: Path, out: Path, cached: bool, steps: int, resolution: int,
             micro: int) -> dict:
    from photogenic.pipeline.core.config.training import TrainConfig
    from photogenic.training.trainer import train

    config = TrainConfig(batch_size=micro * 2, micro_batch_size=micro, max_steps=steps,
                         validate_every=steps, latent_cache=cached, resolution=resolution,
                         lr_warmup_steps=0, validation_timesteps=1)
    started = time.perf_counter()
    train(data, base, out, config, progress=False)
    rates = _rates(out)
    return {"images_per_s_median": statistics.median(rates), "steps_timed": len(rates),
            "wall_s_including_setup": round(time.perf_counter() - started, 2)}


@click.command()
@click.option("--steps", default=30, show_default=True)
@click.option("--resolution", "resolutions", multiple=True, type=int, default=(64, 128),
              show_default=True)
@click.option("--micro-batch", default=4, show_default=True)
@click.option("--threads", default=1, show_default=True, help="torch CPU threads")
@click.option("--out", "out_file", default=str(REPO / "bench" / "results" / "train.json"))
def main(steps, resolutions, micro_batch, threads, out_file) -> None:
    import torch

    from photogenic.pipeline.core.config import parse_config
    from photogenic.pipeline.export.stage import export_run
    from tests.pipeline.export.fake_run import make_fake_run
    from photogenic.training.tiny import make_tiny_base

    torch.set_num_threads(threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = make_fake_run(tmp / "fake", long_side=256)
        data = export_run(run, tmp / "export",
                          config=parse_config({"export": {"validation_fraction": 0.25}})).out
        base = make_tiny_base(tmp / "base")
        for res in resolutions:
            row = {"resolution": res}
            # Alternate the order per resolution so neither mode always runs on a warmer machine.
            modes = ("cached", "uncached") if res % 2 == 0 else ("uncached", "cached")
            for mode in modes:
                row[mode] = _measure(data, base, tmp / f"{mode}-{res}", mode == "cached", steps,
                                     res, micro_batch)
            row["ratio_cached_over_uncached"] = round(
                row["cached"]["images_per_s_median"] / row["uncached"]["images_per_s_median"], 3)
            results.append(row)
            click.echo(f"{res}px: cached {row['cached']['images_per_s_median']:.1f} img/s, "
                       f"uncached {row['uncached']['images_per_s_median']:.1f} img/s, "
                       f"ratio {row['ratio_cached_over_uncached']}x")
    report = {
        "what": "training images/s per optimizer step on the tiny random-weight model (CPU), "
                "latent cache on vs off; median over steps",
        "note": "the saving is the VAE + text-encoder cost per batch relative to the UNet step; "
                "measured here for the tiny model only, real models will differ",
        "steps": steps, "micro_batch": micro_batch, "effective_batch": micro_batch * 2,
        "torch_threads": threads, "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "results": results,
    }
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    Path(out_file).write_text(json.dumps(report, indent=2) + "\n")
    click.echo(f"wrote {out_file}")


if __name__ == "__main__":
    main()
