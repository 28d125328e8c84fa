"""The cascade: pool rows in, score rows out, cheapest checks first.

Each image is parsed for its header before anything decodes it, decoded at most once (JPEG
draft mode, at the largest size any enabled filter asks for, which is still far below full
size), and a row stops being scored once it failed, unless `score_all` asks for every score
(threshold studies). Models load once per process, in `setup()`.

Order. The static order is `[job] order` if set, else by cost hint. With `[job] adaptive` each
process instead measures, as it runs, every filter's seconds per row and reject rate and runs each
batch with the filters that can reject in increasing expected cost per rejected row
(`order_by_expected_cost`). A row's verdict (`passed`) never depends on the order: it passes only
if every check passes. What does depend on it is which failing check a rejected row records first
(`reject_reason`, and the score columns up to it); that is the point, since a row stops at the
first failure in the order run. Static runs record the same reasons on every run; `orders` counts
the orders an adaptive process used. `bench/filters.py` measures both.
"""
from __future__ import annotations

import hashlib
import io
import logging
import re
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image

from photogenic.filters.base import BaseFilter, FilterSkipped, Need, Sample
from photogenic.filters.registry import constructor_kwargs
from photogenic.pipeline.core.config import Config
from photogenic.pipeline.core.schema import score_schema

log = logging.getLogger(__name__)


def build_filter(config: Config, name: str) -> BaseFilter:
    """One filter, built from its `[filters.NAME]` table (whether enabled or not)."""
    return config.registry.get(name)(**constructor_kwargs(getattr(config.filters, name)))


def build_filters(config: Config) -> tuple[list[BaseFilter], dict[str, str]]:
    """Enabled filters in cascade order, and {name: why} for those skipped."""
    built, skipped = [], {}
    for cls in config.registry.configurable:
        if not getattr(config.filters, cls.name).enabled:
            skipped[cls.name] = "disabled in config"
            continue
        try:
            built.append(build_filter(config, cls.name))
        except FilterSkipped as why:
            skipped[cls.name] = str(why)
    built += [cls() for cls in config.registry.always]
    order = config.job.order
    if order:
        rank = {n: i for i, n in enumerate(order)}
        built.sort(key=lambda f: (rank.get(f.name, len(rank)), f.cost_hint))
    else:
        # Filters that cannot reject (scores only) go last: no point scoring rows a later check drops.
        built.sort(key=lambda f: (not f.rejects, f.cost_hint, f.need))
    return built, skipped


STAGES = ("header", "decode", "embed")
_STAGE_NEED = {"header": Need.HEADER, "decode": Need.PIXELS, "embed": Need.EMBEDDING}
# Seconds per row assumed for a stage before this process has timed it (one pseudo-row of weight).
STAGE_COST_PRIOR = {"header": 1e-4, "decode": 2e-3, "embed": 0.011}
REJECT_RATE_PRIOR = 0.5  # pseudo-rejections out of one pseudo-row: an untried filter is worth trying early


def can_reject(f: BaseFilter) -> bool:
    return bool(f.rejects) and f.reject_reason is not None


def stages_needed(f: BaseFilter) -> list[str]:
    return [s for s in STAGES if f.need >= _STAGE_NEED[s]]


def order_by_expected_cost(filters: list[BaseFilter], seconds: Mapping[str, float], rows: Mapping[str, int],
                           rejected: Mapping[str, int]) -> list[BaseFilter]:
    """The filters that can reject, cheapest expected cost per rejected row first, then the others
    in their given order.

    A filter's cost per row is its measured seconds per row (its `cost_hint` counts as one row
    more) plus, per row, the stages (header parse, decode, embedding) it needs that no filter
    before it in the order needed; its reject rate is (rejected + 0.5) / (rows + 1). Chosen
    greedily, ties broken by the given (static) order, so equal measurements give one order."""
    def per_row(name: str, prior: float) -> float:
        return (seconds.get(name, 0.0) + prior) / (rows.get(name, 0) + 1)

    rejecting = [f for f in filters if can_reject(f)]
    rest = [f for f in filters if not can_reject(f)]
    position = {id(f): i for i, f in enumerate(filters)}
    have: set[str] = set()
    out: list[BaseFilter] = []
    while rejecting:
        def expected(f: BaseFilter) -> tuple[float, int]:
            cost = per_row(f.name, f.cost_hint)
            cost += sum(per_row(s, STAGE_COST_PRIOR[s]) for s in stages_needed(f) if s not in have)
            rate = (rejected.get(f.name, 0) + REJECT_RATE_PRIOR) / (rows.get(f.name, 0) + 1)
            return cost / rate, position[id(f)]

        best = min(rejecting, key=expected)
        rejecting.remove(best)
        out.append(best)
        have.update(stages_needed(best))
    return out + rest


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        # 16-bit and float greys: Pillow's convert clips them to white; rescale to 8 bits.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
    if "A" in img.mode or img.mode == "P":
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def _describe(err: Exception) -> str:
    # No object addresses in details: reruns must produce identical rows.
    return re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(err).__name__}: {err}")[:300]


def _signed_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FilterRun:
    """What one filter made of a batch: score columns, a verdict per sample (None: pass, else the
    reason detail) and, for samples it crashed on, the error (those rows become `unreadable`)."""

    scores: dict[str, list]
    verdicts: list[str | None]
    errors: dict[int, str] = field(default_factory=dict)  # sample index in the batch -> error


class Cascade:
    def __init__(self, config: Config, score_all: bool | None = None, filters: list[BaseFilter] | None = None,
                 save_embeddings: bool = False, adaptive: bool | None = None):
        self.config = config
        self.schema = score_schema(config.registry)  # built-in columns + this run's plugins' columns
        self.save_embeddings = save_embeddings
        self.embedding_batches: list[pa.RecordBatch] = []
        self.score_all = config.job.score_all if score_all is None else score_all
        if filters is None:
            filters, self.skipped = build_filters(config)
        else:
            self.skipped = {}
            unregistered = [f.name for f in filters if not set(f.columns) <= set(self.schema.names)]
            if unregistered:
                raise ValueError(f"filters {unregistered} are not registered in this config (plugins go in "
                                 "[job] plugins): their columns have no place in the score table")
        self.filters = filters
        geo = config.filters.geometry
        self.max_pixels, self.max_bytes = geo.max_pixels, geo.max_bytes
        self.decode_size = max([f.pixel_size for f in filters] + [0])
        self.embedder = None
        self.timings: Counter = Counter()  # stage -> seconds
        self.scored: Counter = Counter()  # stage -> rows
        self.rejected: Counter = Counter()  # filter -> rows it failed (a reject or a crash), of `scored`
        # Adaptive order: pointless under score_all (every filter runs on every row) and off when
        # `[job] order` pins one.
        want = config.job.adaptive if adaptive is None else adaptive
        self.adaptive = bool(want) and not self.score_all and not config.job.order
        self.orders: Counter = Counter()  # adaptive: order (names) -> batches run in it
        self._ready = False

    def current_order(self) -> list[BaseFilter]:
        """The order the next batch runs in: static, or by expected cost per rejected row so far."""
        if not self.adaptive:
            return list(self.filters)
        return order_by_expected_cost(self.filters, self.timings, self.scored, self.rejected)

    @property
    def meaningless(self) -> list[str]:
        """Score columns that come from randomly initialised models and mean nothing."""
        out = []
        for f in self.filters:
            if f.meaningless:
                out += [c for c in f.columns if not c.startswith("_")]
        return out

    def setup(self) -> None:
        if self._ready:
            return
        for f in self.filters:
            f.setup()
        if any(f.need == Need.EMBEDDING for f in self.filters):
            self.embedder = next((f.embedder for f in self.filters if f.embedder is not None), None)
            if self.embedder is None:
                from photogenic.filters.clip import ClipEmbedder

                self.embedder = ClipEmbedder(**self.config.filters.clip.model_dump(exclude={"enabled", "min_score", "min_score_fraction"}))
            self.embedder.setup()
            for f in self.filters:  # fail at start on a head/model mismatch, not per row
                f.bind_embedder(self.embedder)
        self._ready = True

    # -- stages ------------------------------------------------------------------------------

    def _parse_header(self, s: Sample) -> str | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(s.data))
                s.width, s.height, s.format = img.width, img.height, img.format
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            return f"pixel bomb: {_describe(err)}"
        except Exception as err:  # anything Pillow cannot identify is unreadable, whatever it raised
            return f"not an image: {_describe(err)}"
        if not s.width or not s.height:
            return "image has zero size"
        if s.width * s.height > self.max_pixels:
            return f"pixel bomb: {s.width}x{s.height} > {self.max_pixels} pixels"
        return None

    def _decode(self, s: Sample) -> str | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = Image.open(io.BytesIO(s.data))
                if self.decode_size and img.format == "JPEG":
                    img.draft("RGB", (self.decode_size, self.decode_size))
                img.load()
                img = to_rgb(img)
                if self.decode_size and max(img.size) > self.decode_size:
                    img.thumbnail((self.decode_size, self.decode_size), Image.Resampling.BILINEAR)
                s.image = img
        except Exception as err:
            return f"cannot decode: {_describe(err)}"
        return None

    # -- the cascade -------------------------------------------------------------------------

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        self.setup()
        rows = batch.to_pylist()
        n = len(rows)
        out: dict[str, list] = {name: [None] * n for name in self.schema.names}
        for name in ("key", "caption", "likes", "views", "source", "shard", "meta"):
            out[name] = [r[name] for r in rows]
        samples = [Sample(r["key"], r["caption"], r["image"], r["width"], r["height"]) for r in rows]
        reason: list[str | None] = [None] * n
        detail: list[str | None] = [None] * n
        readable = [True] * n

        def fail(i: int, why: str, what: str) -> None:
            if reason[i] is None:
                reason[i], detail[i] = why, what

        for i, r in enumerate(rows):
            data = r["image"]
            if data:
                out["bytes"][i] = len(data)
                out["sha256"][i] = _signed_hex(data)
            if r["read_error"] or not data:
                readable[i] = False
                fail(i, "unreadable", r["read_error"] or "no image bytes")

        order = self.current_order()
        if self.adaptive:
            self.orders[" > ".join(f.name for f in order)] += 1
        self._run_in_order(order, samples, reason, readable, out, fail)

        if self.save_embeddings and self.embedder is not None:
            from photogenic.filters.clip import embedding_batch, model_label

            self.embedding_batches.append(embedding_batch(samples, model_label(self.embedder)))
        for i, s in enumerate(samples):
            out["width"][i], out["height"][i], out["format"][i] = s.width, s.height, s.format
            if s.width and s.height and out["aspect"][i] is None:
                out["aspect"][i] = max(s.width, s.height) / min(s.width, s.height)
            s.image = s.data = None  # free pixels before the next batch
        out["passed"] = [r is None for r in reason]
        out["reject_reason"] = [r or "" for r in reason]
        out["reject_detail"] = detail
        return pa.RecordBatch.from_pydict(out, schema=self.schema)

    def _run_in_order(self, order, samples, reason, readable, out, fail) -> None:
        """Filters in `order`; a row stops at its first failure (all run under score_all). Header
        parse, decode and embedding run just before the first filter that needs them."""
        n = len(samples)

        def alive(need: Need) -> list[int]:
            idx = [i for i in range(n) if self.score_all or reason[i] is None]
            return idx if need == Need.CAPTION else [i for i in idx if readable[i]]

        have_header = have_pixels = have_embeddings = False
        for f in order:
            if f.need >= Need.HEADER and not have_header:
                self._stage("header", alive(Need.HEADER), lambda i: self._parse_header(samples[i]), fail, readable)
                have_header = True
            if f.need >= Need.PIXELS and not have_pixels:
                self._stage("decode", alive(Need.PIXELS), lambda i: self._decode(samples[i]), fail, readable)
                have_pixels = True
            if f.need >= Need.EMBEDDING and not have_embeddings:
                self._embed([samples[i] for i in alive(Need.EMBEDDING)], fail, readable, samples)
                have_embeddings = True
            idx = alive(f.need)
            if not idx:
                continue
            result = self._run_filter(f, [samples[i] for i in idx])
            written = self._written(f, result)
            for j, i in enumerate(idx):
                for col in written:
                    out[col][i] = result.scores[col][j]
                if j in result.errors:
                    readable[i] = False
                    fail(i, "unreadable", f"{f.name}: {result.errors[j]}")
                elif result.verdicts[j] is not None:
                    fail(i, f.reject_reason, result.verdicts[j])

    @staticmethod
    def _written(f: BaseFilter, result: FilterRun) -> list[str]:
        written = [col for col in result.scores if not col.startswith("_")]
        undeclared = [col for col in written if col not in f.columns]
        if undeclared:  # would be lost: the score table has the declared columns only
            raise TypeError(f"filter {f.name!r} returned columns {undeclared} it does not declare in `columns` "
                            "(prefix a column with '_' to keep it out of the scores)")
        return written

    def _stage(self, name, idx, step, fail, readable) -> None:
        start = time.perf_counter()
        for i in idx:
            err = step(i)
            if err:
                readable[i] = False
                fail(i, "unreadable", err)
        self.timings[name] += time.perf_counter() - start
        self.scored[name] += len(idx)

    def _embed(self, batch: list[Sample], fail, readable, samples) -> None:
        if not batch:
            return
        start = time.perf_counter()
        try:
            self.embedder.embed(batch)
        except Exception as err:  # one bad image must not sink the batch: retry one by one
            log.warning("embedding batch failed (%s); retrying per image", err)
            for s in batch:
                try:
                    self.embedder.embed([s])
                except Exception as one:
                    i = next(k for k, x in enumerate(samples) if x is s)
                    readable[i] = False
                    fail(i, "unreadable", f"embedding failed: {_describe(one)}")
        self.timings["embed"] += time.perf_counter() - start
        self.scored["embed"] += len(batch)

    def _run_filter(self, f: BaseFilter, batch: list[Sample]) -> FilterRun:
        start = time.perf_counter()
        try:
            scores = f.score(batch)
            result = FilterRun(scores, f.decide(scores))
        except Exception as err:
            log.warning("filter %s failed on a batch (%s); retrying per image", f.name, err)
            result = FilterRun({}, [])
            for j, s in enumerate(batch):
                try:
                    one = f.score([s])
                    result.verdicts.append(f.decide(one)[0])
                except Exception as e:
                    one = {c: [None] for c in f.columns}
                    result.verdicts.append(None)
                    result.errors[j] = _describe(e)
                for col, vals in one.items():
                    result.scores.setdefault(col, []).append(vals[0])
        self.timings[f.name] += time.perf_counter() - start
        self.scored[f.name] += len(batch)
        self.rejected[f.name] += sum(1 for j, v in enumerate(result.verdicts) if v is not None or j in result.errors)
        return result
