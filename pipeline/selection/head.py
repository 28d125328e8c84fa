"""A head learnt from review decisions in select's ranking (`[select] head`).

"auto" takes the head of the latest review pass of this run that learnt one
(RUN/review/NAME/head.pth, annotation/head.py); a path takes that head. Its scores of the saved
CLIP embeddings (RUN/embeddings) go to the engine as the table head_scores(key, head_score), and
the ranking blends them with engagement (sql.HeadBlend). Without a head, or with no embeddings,
selection ranks by engagement alone, as it always did.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pyarrow as pa

from photogenic.pipeline.core.config import Config
from photogenic.pipeline.core.layout import RunDir
from photogenic.pipeline.selection.plan import SelectError

log = logging.getLogger(__name__)

HEAD_FILE = "head.pth"
HEAD_SCHEMA = pa.schema([("key", pa.string()), ("head_score", pa.float64())])


class HeadError(SelectError):
    pass


def resolve(run: RunDir, config: Config) -> Path | None:
    """The head file `[select] head` names for this run, or None."""
    wanted = config.select.head
    if not wanted:
        return None
    if wanted != "auto":
        path = Path(wanted)
        if not path.is_file():
            raise HeadError(f"[select] head {wanted}: no such file")
        return path
    for name in reversed(config.review.pass_names()):
        path = run.review(name) / HEAD_FILE
        if path.is_file():
            return path
    return None


def scores_table(path: Path, run: RunDir) -> pa.Table | None:
    """key -> head score for every saved embedding; None without embeddings."""
    from photogenic.filters.aesthetic import score_saved_embeddings

    if not run.embeddings.exists():
        log.warning("[select] head %s: no %s, ranking by engagement alone", path, run.embeddings)
        return None
    try:
        keys, scores, _ = score_saved_embeddings(path, run.embeddings)
    except ValueError as err:
        raise HeadError(f"[select] head: {err}") from None
    return pa.table({"key": pa.array(keys, pa.string()), "head_score": pa.array(scores, pa.float64())},
                    schema=HEAD_SCHEMA)


def signature(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
