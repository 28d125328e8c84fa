"""Training data: the exported imagefolder, aspect-ratio buckets, batches, and the latent cache.

Buckets never drop an image. Each image goes to the bucket whose aspect ratio is nearest its own
(resized to cover the bucket, then centre-cropped, so little of the composition is cut). Every
epoch visits every image once; a bucket whose last batch is short (including a bucket holding
fewer images than one micro-batch) is padded with repeats of images from the same bucket, so its
images train at their own aspect instead of being discarded or squashed into another bucket.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from photogenic.pipeline.core.layout import METADATA, ExportDir

SPLITS = ("train", "validation")


class DataError(ValueError):
    """The training data folder is not usable; the message says why."""


@dataclass(frozen=True)
class Example:
    key: str
    path: Path
    text: str
    width: int
    height: int


def _split_dirs(data_dir: Path) -> dict[str, Path]:
    # An export (DIR/imagefolder/<split>/), a bare imagefolder (DIR/<split>/) or one folder.
    for root in (ExportDir(data_dir).imagefolder, data_dir):
        found = {s: root / s for s in SPLITS if (root / s / METADATA).exists()}
        if found:
            return found
    if (data_dir / METADATA).exists():
        return {"train": data_dir}
    raise DataError(
        f"no metadata.jsonl under {data_dir} (expected an export folder, "
        "or an imagefolder with train/metadata.jsonl)"
    )


def read_examples(data_dir: str | Path) -> dict[str, list[Example]]:
    """Examples per split ("train", "validation"), in file order; validation may be empty."""
    from PIL import Image

    splits: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for split, folder in _split_dirs(Path(data_dir)).items():
        for n, line in enumerate((folder / METADATA).read_text().splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            path = folder / row["file_name"]
            try:
                with Image.open(path) as im:
                    width, height = im.size
            except (OSError, ValueError) as err:
                raise DataError(f"{folder / METADATA} line {n}: {path}: {err}") from None
            key = str(row.get("key") or Path(row["file_name"]).stem)
            splits[split].append(Example(key, path, str(row.get("text") or ""), width, height))
    if not splits["train"]:
        raise DataError(f"no training images in {data_dir}")
    return splits


# --- buckets ----------------------------------------------------------------------------------


def make_buckets(resolution: int, step: int, max_aspect: float) -> list[tuple[int, int]]:
    """(width, height) pairs, multiples of `step`, about resolution**2 pixels each."""
    if resolution % step:
        raise DataError(f"resolution {resolution} is not a multiple of bucket_step {step}")
    area = resolution * resolution
    buckets = {(resolution, resolution)}
    for width in range(step, int(resolution * math.sqrt(max_aspect)) + step, step):
        height = (area // width) // step * step
        if height >= step and max(width / height, height / width) <= max_aspect:
            buckets.add((width, height))
    return sorted(buckets)


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), b))


def assign_buckets(examples: list[Example], buckets: list[tuple[int, int]]
                   ) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(nearest_bucket(ex.width, ex.height, buckets), []).append(i)
    return dict(sorted(groups.items()))


def epoch_batches(groups: dict[tuple[int, int], list[int]], micro_batch: int, seed: int,
                  epoch: int) -> list[list[int]]:
    """One epoch of micro-batches: every image exactly once, short batches padded by repeats."""
    rng = random.Random(f"{seed}:{epoch}")
    batches = []
    for bucket in sorted(groups):
        members = list(groups[bucket])
        rng.shuffle(members)
        for start in range(0, len(members), micro_batch):
            batch = members[start : start + micro_batch]
            while len(batch) < micro_batch:  # pad from the same bucket (never drop, never mix)
                batch.append(members[rng.randrange(len(members))])
            batches.append(batch)
    rng.shuffle(batches)
    return batches


class BatchStream:
    """Micro-batch number j of the run -> image indices; a pure function of (seed, j).

    That is what makes resume exact: a restarted run asks for the same j and gets the same batch.
    """

    def __init__(self, groups: dict[tuple[int, int], list[int]], micro_batch: int, seed: int):
        self.groups, self.micro_batch, self.seed = groups, micro_batch, seed
        self.per_epoch = len(epoch_batches(groups, micro_batch, seed, 0))
        self._epoch, self._batches = -1, []

    def __getitem__(self, j: int) -> list[int]:
        epoch, pos = divmod(j, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._batches = epoch_batches(self.groups, self.micro_batch, self.seed, epoch)
        return self._batches[pos]


# --- pixels and the latent cache ---------------------------------------------------------------


def load_pixels(path: Path, size: tuple[int, int]):
    """Image as a (3, H, W) tensor in [-1, 1]: resized to cover `size`, centre-cropped."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        im = ImageOps.fit(im, size, method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
        arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class Encoder:
    """The frozen VAE and text encoder: images -> latents, captions -> embeddings."""

    def __init__(self, vae, text_encoder, tokenizer, device):
        self.vae, self.text_encoder, self.tokenizer = vae, text_encoder, tokenizer
        self.device = device
        self.scaling = vae.config.scaling_factor
        self.shift = getattr(vae.config, "shift_factor", None) or 0.0

    def latents(self, pixels):
        import torch

        with torch.no_grad():
            dist = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist
            # The mean, not a sample: deterministic, so cached and uncached runs agree.
            return ((dist.mean - self.shift) * self.scaling).float()

    def text(self, captions: list[str]):
        import torch

        ids = self.tokenizer(captions, padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt")
        with torch.no_grad():
            return self.text_encoder(ids.input_ids.to(self.device))[0].float()


def cache_fingerprint(base_model: str, resolution: int, buckets: Iterable) -> str:
    info = json.dumps({"base": str(Path(base_model).resolve()), "resolution": resolution,
                       "buckets": sorted(list(buckets)), "v": 1}, sort_keys=True)
    return hashlib.sha256(info.encode()).hexdigest()[:16]


class LatentCache:
    """Latents and caption embeddings, one safetensors file per image, under `root`.

    Files are named by a hash of (image path, bytes size, mtime, caption, bucket, model), written
    atomically, and reused by reruns and resumes; a different base model or bucket set uses
    different names, so a stale cache is never read.
    """

    def __init__(self, root: Path, fingerprint: str):
        self.root, self.fingerprint = Path(root), fingerprint
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, ex: Example, bucket: tuple[int, int]) -> Path:
        st = ex.path.stat()
        ident = f"{self.fingerprint}|{ex.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|" \
                f"{ex.text}|{bucket}"
        return self.root / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.safetensors"

    def empty_text_path(self) -> Path:
        return self.root / f"empty-text-{self.fingerprint}.safetensors"

    def fill(self, examples: list[Example], buckets: dict[int, tuple[int, int]], encoder: Encoder,
             indices: list[int], batch_size: int = 8, progress: bool = True) -> int:
        """Encode the missing entries among `indices`; returns how many were encoded."""
        import torch
        from safetensors.torch import save
        from tqdm import tqdm

        from photogenic.pipeline.core.runio import write_bytes_atomic

        todo = [i for i in indices if not self.path_for(examples[i], buckets[i]).exists()]
        by_bucket: dict[tuple[int, int], list[int]] = {}
        for i in todo:
            by_bucket.setdefault(buckets[i], []).append(i)
        bar = tqdm(total=len(todo), desc="caching latents", unit="img", disable=not progress)
        for bucket, members in by_bucket.items():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                pixels = torch.stack([load_pixels(examples[i].path, bucket) for i in chunk])
                latents = encoder.latents(pixels).cpu()
                texts = encoder.text([examples[i].text for i in chunk]).cpu()
                for j, i in enumerate(chunk):
                    blob = save({"latent": latents[j].contiguous(), "text": texts[j].contiguous()})
                    write_bytes_atomic(blob, self.path_for(examples[i], bucket))
                bar.update(len(chunk))
        bar.close()
        empty = self.empty_text_path()
        if not empty.exists():
            write_bytes_atomic(save({"text": encoder.text([""])[0].cpu().contiguous()}), empty)
        return len(todo)

    def load(self, ex: Example, bucket: tuple[int, int]):
        from safetensors.torch import load_file

        entry = load_file(self.path_for(ex, bucket))
        return entry["latent"], entry["text"]

    def empty_text(self):
        from safetensors.torch import load_file

        return load_file(self.empty_text_path())["text"]
