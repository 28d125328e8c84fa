"""`photogenic aesthetic train`: fit a LAION-format aesthetic head from review decisions.

Inputs are CLIP image embeddings saved by the filter job (`--save-embeddings`, or any parquet
with `key` and `image_embedding`) and labels: Label Studio review decisions (`keep` true/false,
e.g. RUN/review/pass1/decisions.parquet; pass 2's `mean_rating` when present; incomplete tasks
are left out) or ratings (`rating`/`score`/`label`, e.g. 1-10). The
head has LAION's architecture and keys, so it loads in `[filters.aesthetic] head` and in LAION's
own code. Keep/drop decisions are learnt as 1/0, so such a head scores ~0 (drop) to ~1 (keep);
ratings are learnt on their own scale.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

TARGET_COLUMNS = ("rating", "mean_rating", "score", "label", "keep")  # auto: the first with any value


def read_labels(paths: list[str | Path], target: str = "auto") -> tuple[dict[str, float], str]:
    """{key: target value} from parquet/csv/jsonl files (later files override earlier ones)."""
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401  (pa.compute)
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    labels: dict[str, float] = {}
    used = None
    for path in map(Path, paths):
        if not path.exists():
            raise click.ClickException(f"labels file not found: {path}")
        if path.is_dir():
            table = pa.concat_tables([pq.read_table(p) for p in sorted(path.glob("*.parquet"))])
        elif path.suffix == ".csv":
            table = pcsv.read_csv(path)
        elif path.suffix in (".jsonl", ".json"):
            table = pjson.read_json(path)
        else:
            table = pq.read_table(path)
        if "key" not in table.column_names:
            raise click.ClickException(f"{path} has no `key` column (columns: {table.column_names})")
        if "complete" in table.column_names:  # review decisions: only tasks with all their annotations
            table = table.filter(pa.compute.fill_null(table.column("complete"), False))
        column = target if target != "auto" else next(
            (c for c in TARGET_COLUMNS if c in table.column_names and table.column(c).null_count < table.num_rows), None)
        if column is None or column not in table.column_names:
            raise click.ClickException(f"{path} has no label column ({target if target != 'auto' else ' / '.join(TARGET_COLUMNS)}); "
                                       f"columns: {table.column_names}")
        if used and column != used:
            raise click.ClickException(f"label files mix targets: {used} and {column}")
        used = column
        for key, value in zip(table.column("key").to_pylist(), table.column(column).to_pylist()):
            if value is None or key is None:
                continue
            labels[str(key)] = float(value)  # bool keep -> 1.0 / 0.0
    return labels, used or "keep"


def train_head(x: np.ndarray, y: np.ndarray, epochs: int = 300, lr: float = 1e-3, batch_size: int = 64,
               val_fraction: float = 0.2, weight_decay: float = 1e-4, seed: int = 0, init: str | None = None,
               ) -> tuple[Any, dict[str, Any]]:
    """Fit LAION's MLP with MSE on L2-normalised embeddings; keeps the epoch with the best validation loss."""
    import torch

    from photogenic.filters.aesthetic import build_head, load_head

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    x = x.astype(np.float32) / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = y.astype(np.float32)
    order = rng.permutation(len(x))
    n_val = int(round(len(x) * val_fraction)) if len(x) >= 10 else 0
    val, train = order[:n_val], order[n_val:]
    head = load_head(init) if init else build_head(x.shape[1])
    if head.input_size != x.shape[1]:
        raise click.ClickException(f"--init head takes {head.input_size}-d embeddings, these are {x.shape[1]}-d")
    optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    best = (float("inf"), None, 0)
    history = []
    for epoch in range(epochs):
        head.train()
        for begin in range(0, len(train), batch_size):
            idx = torch.from_numpy(train[begin:begin + batch_size])
            loss = torch.nn.functional.mse_loss(head(xt[idx]).squeeze(-1), yt[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        rng.shuffle(train)  # a new minibatch order each epoch
        head.eval()
        with torch.no_grad():
            train_loss = float(torch.nn.functional.mse_loss(head(xt[train]).squeeze(-1), yt[train]))
            check = val if len(val) else train
            val_loss = float(torch.nn.functional.mse_loss(head(xt[check]).squeeze(-1), yt[check]))
        history.append((train_loss, val_loss))
        if val_loss < best[0]:
            best = (val_loss, {k: v.clone() for k, v in head.state_dict().items()}, epoch)
    head.load_state_dict(best[1])
    head.eval()
    metrics = {"n_train": int(len(train)), "n_val": int(len(val)), "best_epoch": best[2], "epochs": epochs,
               "val_mse": best[0], "train_mse_first": history[0][0], "train_mse_last": history[-1][0]}
    if set(np.unique(y)) <= {0.0, 1.0} and len(val):
        with torch.no_grad():
            pred = head(xt[val]).squeeze(-1).numpy() >= 0.5
        metrics["val_accuracy"] = float((pred == (y[val] >= 0.5)).mean())
    return head, metrics


def save_head(head, out: Path, metadata: dict[str, Any]) -> None:
    """The state dict alone (LAION's format), metadata beside it in `<out>.json`; both atomic."""
    import os

    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(head.state_dict(), tmp)
    os.replace(tmp, out)
    meta = Path(str(out) + ".json")
    meta_tmp = meta.with_name(meta.name + ".tmp")
    meta_tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True))
    os.replace(meta_tmp, meta)


@click.group()
def aesthetic() -> None:
    """LAION-format aesthetic heads on CLIP embeddings."""


@aesthetic.command("train")
@click.option("--embeddings", required=True, type=click.Path(exists=True),
              help="Parquet file or folder with key + image_embedding (photogenic filter --save-embeddings).")
@click.option("--labels", "labels", required=True, multiple=True, type=click.Path(),
              help="Decisions/labels (parquet, csv, jsonl) with key and keep or rating/score/label; repeatable.")
@click.option("--target", default="auto", show_default=True, help="Label column to learn (auto: rating, score, label, keep).")
@click.option("--out", required=True, type=click.Path(), help="Where to write the head (.pth).")
@click.option("--init", type=click.Path(exists=True), default=None, help="Fine-tune from an existing LAION-format head.")
@click.option("--epochs", default=300, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--val-fraction", default=0.2, show_default=True)
@click.option("--seed", default=0, show_default=True)
def train(embeddings: str, labels: tuple[str, ...], target: str, out: str, init: str | None, epochs: int, lr: float,
          batch_size: int, val_fraction: float, seed: int) -> None:
    """Fit a head from review decisions or ratings on saved CLIP embeddings."""
    from photogenic.filters.clip import read_embeddings

    try:
        keys, vectors, model = read_embeddings(embeddings)
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    targets, column = read_labels(list(labels), target)
    index = {k: i for i, k in enumerate(keys)}
    matched = [k for k in targets if k in index]
    if len(matched) < 4:
        raise click.ClickException(f"only {len(matched)} labelled keys have embeddings in {embeddings} "
                                   f"({len(targets)} labels, {len(keys)} embeddings); need at least 4")
    x = vectors[[index[k] for k in matched]]
    y = np.array([targets[k] for k in matched], np.float32)
    if len(np.unique(y)) < 2:
        raise click.ClickException(f"all {len(y)} labels are {y[0]}: nothing to learn")
    head, metrics = train_head(x, y, epochs=epochs, lr=lr, batch_size=batch_size, val_fraction=val_fraction,
                               seed=seed, init=init)
    meaningless = bool(model and model.startswith("tiny-random"))
    metadata = {"target": column, "embedding_model": model, "input_size": int(x.shape[1]), "labels": len(targets),
                "unmatched_labels": len(targets) - len(matched), "metrics": metrics, "init": init,
                "meaningless": meaningless}
    save_head(head, Path(out), metadata)
    click.echo(f"trained aesthetic head on {len(matched)} labelled embeddings ({column}): "
               + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    if meaningless:
        click.echo("note: embeddings come from the random 'tiny-random' CLIP model: this head is meaningless", err=True)
    click.echo(f"wrote {out} (+ {out}.json)")
