"""Base vs tuned, the way Emu evaluated quality-tuning, with automatic judges.

Both models draw the same prompts with the same seeds (so each pair starts from the same noise);
every pair is scored by CLIP image-text similarity and, where a head exists, the LAION-style
aesthetic head; each pair is a win, tie or loss for the tuned model, tallied overall and per
prompt category with Wilson 95% intervals. `training.eval_ab` puts the same pairs in front of
people. Outputs (all rerunnable: finished images are reused):

    OUT/images/{base,tuned}/PROMPT-sSEED.png   OUT/pairs.parquet   OUT/results.json
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

from photogenic.pipeline.core.layout import EvalDir, ModelDir
from photogenic.pipeline.core.runio import clear_success, mark_success, write_bytes_atomic, write_json_atomic, write_parquet_atomic
from photogenic.pipeline.core.config.training import EvalConfig
from photogenic.pipeline.core.summary import StageSummary, write_summary
from photogenic.pipeline.core.summary import fingerprint as fingerprint_of

log = logging.getLogger(__name__)

PROMPTS_FILE = Path(__file__).parent / "data" / "prompts.tsv"
TINY_MARKER = "TINY_RANDOM_MODEL.txt"
TINY_PARAMS = 10_000_000  # a UNet this small cannot have learned to draw anything
OUTCOMES = ("win", "tie", "loss")
Z95 = 1.959963984540054


class EvalError(ValueError):
    pass


# --- prompts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    id: str
    category: str
    text: str


def load_prompts(path: str | Path = PROMPTS_FILE) -> list[Prompt]:
    """`category<TAB>prompt` per line; blank lines and `#` comments skipped; ids are line-ordered."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise EvalError(f"cannot read prompts file {path}: {err}") from None
    prompts, seen = [], set()
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        category, sep, text = line.partition("\t")
        if not sep or not category.strip() or not text.strip():
            raise EvalError(f"{path}:{lineno}: expected 'category<TAB>prompt', got {line[:80]!r}")
        if text.strip() in seen:
            raise EvalError(f"{path}:{lineno}: duplicate prompt {text.strip()[:60]!r}")
        seen.add(text.strip())
        prompts.append(Prompt(f"p{len(prompts):04d}", category.strip(), text.strip()))
    if not prompts:
        raise EvalError(f"{path} holds no prompts")
    return prompts


def spread(prompts: list[Prompt], limit: int | None) -> list[Prompt]:
    """At most `limit` prompts, taken round-robin over categories so every category is present."""
    if limit is None or limit >= len(prompts):
        return prompts
    by_cat: dict[str, list[Prompt]] = defaultdict(list)
    for p in prompts:
        by_cat[p.category].append(p)
    chosen: list[Prompt] = []
    queues = [iter(v) for v in by_cat.values()]
    while len(chosen) < limit and queues:
        for q in list(queues):
            nxt = next(q, None)
            if nxt is None:
                queues.remove(q)
            elif len(chosen) < limit:
                chosen.append(nxt)
    order = {p.id: i for i, p in enumerate(prompts)}
    return sorted(chosen, key=lambda p: order[p.id])


# --- statistics ---------------------------------------------------------------------------------


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) when there is no data."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)


def outcome(tuned: float, base: float, margin: float) -> str:
    """The tuned model's result on one pair."""
    if tuned - base > margin:
        return "win"
    if base - tuned > margin:
        return "loss"
    return "tie"


def tally(outcomes: Iterable[str]) -> dict[str, Any]:
    counts = {o: 0 for o in OUTCOMES}
    for o in outcomes:
        counts[o] += 1
    n = sum(counts.values())
    row: dict[str, Any] = {"n": n, "wins": counts["win"], "ties": counts["tie"], "losses": counts["loss"]}
    for o in OUTCOMES:
        row[o] = counts[o] / n if n else None
        row[f"{o}_ci"] = list(wilson(counts[o], n))
    return row


def table_by_category(rows: list[dict], outcome_key: str) -> dict[str, dict]:
    """{"all": tally, category: tally, ...} over rows that have an outcome."""
    scored = [r for r in rows if r.get(outcome_key)]
    table = {"all": tally(r[outcome_key] for r in scored)}
    for cat in sorted({r["category"] for r in scored}):
        table[cat] = tally(r[outcome_key] for r in scored if r["category"] == cat)
    return table


# --- models -------------------------------------------------------------------------------------


def model_info(path: str | Path) -> dict[str, Any]:
    """Is this a tiny random model? (marker file, its training base's marker, or UNet size)."""
    path = Path(path)
    model = ModelDir(path)
    if not model.model_index.exists():
        raise EvalError(f"{path} is not a diffusers pipeline directory (no model_index.json)")
    random_weights = (path / TINY_MARKER).exists()
    run_json = model.run_info
    trained_from = None
    if run_json.exists():
        trained_from = json.loads(run_json.read_text()).get("base_model")
        random_weights = random_weights or bool(trained_from and (Path(trained_from) / TINY_MARKER).exists())
    params = _unet_params(model.unet)
    return {"path": str(path.resolve()), "unet_parameters": params, "tiny": params is not None and params < TINY_PARAMS,
            "random_base": random_weights, "trained_from": trained_from}


def _unet_params(unet_dir: Path) -> int | None:
    files = sorted(unet_dir.glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    total = 0
    for f in files:
        with safe_open(str(f), "pt") as fh:
            for name in fh.keys():
                total += math.prod(fh.get_slice(name).get_shape())
    return total


def load_pipeline(path: str | Path, device: str):
    import torch
    from diffusers import DiffusionPipeline

    try:
        # Half precision on a GPU (speed, memory); full on the CPU, where fp16 is slow or missing.
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        pipe = DiffusionPipeline.from_pretrained(str(path), dtype=dtype, safety_checker=None)
    except Exception as err:  # diffusers raises many types for a bad folder
        raise EvalError(f"cannot load the diffusers pipeline in {path}: {type(err).__name__}: {err}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def native_size(pipe) -> tuple[int, int]:
    size = pipe.unet.config.sample_size
    size = size if isinstance(size, (list, tuple)) else (size, size)
    scale = getattr(pipe, "vae_scale_factor", 8)
    return int(size[0] * scale), int(size[1] * scale)


def image_name(prompt: Prompt, seed: int) -> str:
    return f"{prompt.id}-s{seed}.png"


def check_fingerprint(out_dir: Path, fingerprint: dict) -> None:
    """Reused images must come from the same model, settings and prompt file."""
    path = out_dir / "_generation.json"
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded != fingerprint:
            changed = sorted(k for k in fingerprint.keys() | recorded.keys() if recorded.get(k) != fingerprint.get(k))
            raise EvalError(f"{out_dir} holds images made with other settings ({', '.join(changed)} differ); "
                            "use a new --out or delete that folder")
    else:
        write_json_atomic(fingerprint, path)


def generate(model: str | Path, prompts: list[Prompt], seeds: list[int], out_dir: Path, cfg: EvalConfig,
             device: str, fingerprint: dict) -> dict[tuple[str, int], Path]:
    """Images of `model` for every (prompt, seed), reusing those already written."""
    import torch

    check_fingerprint(out_dir, fingerprint)
    want = {(p.id, s): out_dir / image_name(p, s) for p in prompts for s in seeds}
    todo = [(p, s) for p in prompts for s in seeds if not want[(p.id, s)].exists()]
    if not todo:
        return want
    pipe = load_pipeline(model, device)
    height, width = native_size(pipe)
    height, width = cfg.height or height, cfg.width or width
    for begin in range(0, len(todo), cfg.batch_size):
        chunk = todo[begin:begin + cfg.batch_size]
        # CPU generators: the same seed gives the same starting noise on any device.
        generators = [torch.Generator("cpu").manual_seed(s) for _, s in chunk]
        with torch.inference_mode():
            images = pipe(prompt=[p.text for p, _ in chunk], generator=generators, height=height, width=width,
                          num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale, output_type="pil").images
        for (p, s), img in zip(chunk, images):
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            write_bytes_atomic(buf.getvalue(), want[(p.id, s)])
    del pipe
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the second model loads next
    return want


# --- judges -------------------------------------------------------------------------------------


@dataclass
class Judges:
    clip_model: str
    clip_pretrained: str | None
    aesthetic_head: str | None
    meaningless: bool
    notes: list[str]


def resolve_judges(cfg: EvalConfig, clip_model: str | None, clip_pretrained: str | None,
                   aesthetic_head: str | None) -> Judges:
    """Eval settings first, then the [filters.*] ones passed in, then the tiny-random CLIP."""
    from photogenic.filters.clip import TINY_RANDOM

    model = cfg.clip_model or clip_model or TINY_RANDOM
    pretrained = cfg.clip_pretrained if cfg.clip_model else (cfg.clip_pretrained or clip_pretrained)
    head = cfg.aesthetic_head or aesthetic_head
    notes = []
    meaningless = model == TINY_RANDOM
    if meaningless:
        notes.append("CLIP judge is 'tiny-random' (random weights): clip_score and aesthetic_score "
                     "comparisons are MEANINGLESS; set [eval] clip_model/clip_pretrained or [filters.clip].")
    if not head:
        notes.append("no aesthetic head configured ([eval] aesthetic_head or [filters.aesthetic] head): "
                     "aesthetic_score not compared.")
    return Judges(model, pretrained, head, meaningless, notes)


def score_images(paths: list[Path], texts: list[str], judges: Judges, device: str,
                 batch_size: int = 16) -> dict[str, list[float] | None]:
    """CLIP image-text cosine and (with a head) aesthetic score for each image."""
    import numpy as np
    from PIL import Image

    from photogenic.filters.clip import ClipEmbedder

    embedder = ClipEmbedder(model=judges.clip_model, pretrained=judges.clip_pretrained,
                            batch_size=batch_size, device=device)
    embedder.setup()
    chunks = []
    for begin in range(0, len(paths), 64):  # bounded memory: a few dozen decoded images at a time
        images = []
        for p in paths[begin:begin + 64]:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        chunks.append(embedder.embed_images(images))
    image_emb = np.concatenate(chunks) if chunks else np.zeros((0, embedder.dim), np.float32)
    unique = sorted(set(texts))
    text_emb = dict(zip(unique, embedder.embed_texts(unique)))
    clip = [float(np.dot(vec, text_emb[t])) for vec, t in zip(image_emb, texts)]
    aesthetic = None
    if judges.aesthetic_head:
        from photogenic.filters.aesthetic import load_head, score_embeddings

        head = load_head(judges.aesthetic_head)
        if head.input_size != image_emb.shape[1]:
            raise EvalError(f"aesthetic head {judges.aesthetic_head} takes {head.input_size}-d embeddings but CLIP "
                            f"{judges.clip_model!r} gives {image_emb.shape[1]}-d ones")
        aesthetic = [float(v) for v in score_embeddings(head, image_emb)]
    return {"clip_score": clip, "aesthetic_score": aesthetic}


# --- the evaluation -----------------------------------------------------------------------------


def run_eval(base: str | Path, tuned: str | Path, out: str | Path, prompts_file: str | Path = PROMPTS_FILE,
             cfg: EvalConfig | None = None, filter_clip: tuple[str | None, str | None] = (None, None),
             filter_aesthetic_head: str | None = None) -> dict[str, Any]:
    """Generate, score and tally; writes OUT/pairs.parquet and OUT/results.json, returns the results."""
    from photogenic.filters.runtime import set_torch_threads, torch_device

    cfg = cfg or EvalConfig()
    if not cfg.seeds:
        raise EvalError("[eval] seeds is empty: give at least one image seed")
    out = Path(out)
    base_info, tuned_info = model_info(base), model_info(tuned)
    prompts = spread(load_prompts(prompts_file), cfg.max_prompts)
    prompts_sha = hashlib.sha256(Path(prompts_file).read_bytes()).hexdigest()
    judges = resolve_judges(cfg, *filter_clip, filter_aesthetic_head)
    device = torch_device(cfg.device)
    set_torch_threads()
    clear_success(out)
    timings = {}
    images = {}
    for tag, model in (("base", base), ("tuned", tuned)):
        started = time.perf_counter()
        fingerprint = {"model": str(Path(model).resolve()), "steps": cfg.steps, "guidance_scale": cfg.guidance_scale,
                       "height": cfg.height, "width": cfg.width, "prompts_sha256": prompts_sha}
        images[tag] = generate(model, prompts, cfg.seeds, EvalDir(out).images(tag), cfg, device, fingerprint)
        timings[f"generate_{tag}"] = round(time.perf_counter() - started, 3)

    pairs = [(p, s) for p in prompts for s in cfg.seeds]
    started = time.perf_counter()
    paths = [images["base"][(p.id, s)] for p, s in pairs] + [images["tuned"][(p.id, s)] for p, s in pairs]
    scores = score_images(paths, [p.text for p, _ in pairs] * 2, judges, device)
    timings["score"] = round(time.perf_counter() - started, 3)

    rows = pair_rows(pairs, scores, out, cfg)
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=PAIR_SCHEMA), EvalDir(out).pairs)
    results = summarise(rows, cfg, judges, base_info, tuned_info, prompts_file, len(prompts), timings)
    write_json_atomic(results, EvalDir(out).results)
    write_summary(out, StageSummary(
        stage="eval", input_fingerprint=fingerprint_of(base_info, tuned_info, prompts_sha, cfg.model_dump(mode="json")),
        rows_in=len(pairs), rows_out=len(rows), seconds=round(sum(timings.values()), 3),
        config=cfg.model_dump(mode="json"),
        details={"prompts": len(prompts), "seeds": list(cfg.seeds), "results": EvalDir(out).results.name}))
    mark_success(out)
    return results


PAIR_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("prompt_id", pa.string()), ("category", pa.string()), ("prompt", pa.string()),
    ("seed", pa.int64()), ("base_image", pa.string()), ("tuned_image", pa.string()),
    ("base_clip_score", pa.float64()), ("tuned_clip_score", pa.float64()), ("clip_score_outcome", pa.string()),
    ("base_aesthetic_score", pa.float64()), ("tuned_aesthetic_score", pa.float64()),
    ("aesthetic_score_outcome", pa.string()),
])


def pair_rows(pairs: list[tuple[Prompt, int]], scores: dict, out: Path, cfg: EvalConfig) -> list[dict]:
    n = len(pairs)
    rows = []
    for i, (p, s) in enumerate(pairs):
        row = {"pair_id": f"{p.id}-s{s}", "prompt_id": p.id, "category": p.category, "prompt": p.text, "seed": s,
               "base_image": f"images/base/{image_name(p, s)}", "tuned_image": f"images/tuned/{image_name(p, s)}"}
        for metric, margin in (("clip_score", cfg.clip_tie_margin), ("aesthetic_score", cfg.aesthetic_tie_margin)):
            values = scores.get(metric)
            if values is None:
                row.update({f"base_{metric}": None, f"tuned_{metric}": None, f"{metric}_outcome": None})
                continue
            b, t = values[i], values[n + i]
            row.update({f"base_{metric}": b, f"tuned_{metric}": t, f"{metric}_outcome": outcome(t, b, margin)})
        rows.append(row)
    return rows


def summarise(rows: list[dict], cfg: EvalConfig, judges: Judges, base_info: dict, tuned_info: dict,
              prompts_file: str | Path, n_prompts: int, timings: dict) -> dict[str, Any]:
    notes = []
    tiny = [name for name, info in (("base", base_info), ("tuned", tuned_info)) if info["tiny"] or info["random_base"]]
    if tiny:
        notes.append(f"The {' and '.join(tiny)} model{'s are' if len(tiny) > 1 else ' is'} tiny and/or built from "
                     "random weights (a test model): generated images are noise and these win rates are MEANINGLESS.")
    notes += judges.notes
    tables = {}
    for metric in ("clip_score", "aesthetic_score"):
        if any(r[f"{metric}_outcome"] for r in rows):
            tables[metric] = table_by_category(rows, f"{metric}_outcome")
    return {
        "base": base_info, "tuned": tuned_info, "prompts_file": str(Path(prompts_file).resolve()),
        "prompts": n_prompts, "seeds": list(cfg.seeds), "pairs": len(rows),
        "categories": sorted({r["category"] for r in rows}),
        "steps": cfg.steps, "guidance_scale": cfg.guidance_scale,
        "judges": {"clip_model": judges.clip_model, "clip_pretrained": judges.clip_pretrained,
                   "aesthetic_head": judges.aesthetic_head},
        "tie_margin": {"clip_score": cfg.clip_tie_margin, "aesthetic_score": cfg.aesthetic_tie_margin},
        "ci": "Wilson 95% (pairs treated as independent)",
        "meaningless": bool(tiny) or judges.meaningless, "notes": notes,
        "tables": tables, "seconds": timings,
    }
