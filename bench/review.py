"""Measure pushing 20,000 review tasks to a local Label Studio (tasks/s) -> bench/results/review.json.

Starts its own Label Studio (temporary data dir, free port on 127.0.0.1), builds a fake run whose
candidates reuse a few real photographs under 20,000 keys, and times, side by side in one run:
  - materialising review images (decode, downscale, JPEG encode, atomic write), images/s;
  - `push` of all tasks into an empty project (project + storage set-up, key check, batched import);
  - a re-push of the same list (the idempotency check alone: nothing to import; the local
    ledger is verified against the project's task count);
  - listing every task key back from the server (what a push does when the ledger cannot be
    trusted, e.g. after a crash mid-batch);
  - `pull` of the project (all tasks with their annotations + decisions; none annotated yet);
  - 1,000 annotations submitted through the API as an annotator user, then `pull` again.
The push is timed with the media already materialised so it measures Label Studio's side.
"""
from __future__ import annotations

import os
import sys

import argparse
import json
import platform
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from photogenic.annotation import media, server  # noqa: E402
from photogenic.pipeline.core.config.review import ReviewConfig  # noqa: E402
from photogenic.annotation.lsclient import Client  # noqa: E402
from photogenic.annotation.pull import pull  # noqa: E402
from photogenic.annotation.push import push  # noqa: E402
from photogenic.annotation.tasksets import server_keys as project_keys  # noqa: E402
from photogenic.annotation.users import AnnotatorStore  # noqa: E402
from photogenic.pipeline.core.runio import write_json_atomic  # noqa: E402
from tests.annotation.helpers import free_port, make_fake_run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--annotate", type=int, default=1000, help="tasks annotated before the second pull")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "review.json")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="photogenic-bench-review-"))
    config = ReviewConfig(port=free_port(), data_dir=str(work / "ls"), import_batch_size=args.batch)
    try:
        t = time.perf_counter()
        conn = server.start(config, echo=lambda m: print(m, file=sys.stderr))
        start_s = time.perf_counter() - t
        client = Client(conn)
        run = work / "run"
        keys = make_fake_run(run, args.tasks, prefix="b")

        sample = 200
        t = time.perf_counter()
        rows = [(k, str(src)) for k, src in zip(keys[:sample], _sources(run)[:sample])]
        media.materialise_all(rows, run / "review" / "media", config.media_max_side)
        materialise_rate = sample / (time.perf_counter() - t)
        _fill_media(run, keys, sample)

        t = time.perf_counter()
        result = push(run, 1, client, config, echo=lambda m: None)
        push_s = time.perf_counter() - t
        assert result.n_in_project == args.tasks, result

        t = time.perf_counter()
        again = push(run, 1, client, config, echo=lambda m: None)
        repush_s = time.perf_counter() - t
        assert again.n_imported == 0

        t = time.perf_counter()
        listed = project_keys(client, result.project_id)
        list_s = time.perf_counter() - t
        assert len(listed) == args.tasks

        t = time.perf_counter()
        pull(run, 1, client, config)
        pull_s = time.perf_counter() - t

        # Annotations through the API as one annotator user (4 threads), then a pull that has them.
        store = AnnotatorStore(Path(config.data_dir) / "annotators.json")
        token = store.ensure(client, "bench-annotator@photogenic.local")["token"]
        ids = [listed[k] for k in keys[:args.annotate]]
        t = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda tid: _annotate(client, token, tid), ids))
        annotate_s = time.perf_counter() - t
        t = time.perf_counter()
        quality = pull(run, 1, client, config)
        pull_annotated_s = time.perf_counter() - t
        assert quality["n_annotations"] == args.annotate

        out = {
            "tasks": args.tasks,
            "import_batch_size": args.batch,
            "push_seconds": round(push_s, 2),
            "push_tasks_per_s": round(args.tasks / push_s, 1),
            "repush_seconds_nothing_to_import": round(repush_s, 2),
            "list_all_task_keys_from_server_seconds": round(list_s, 2),
            "pull_seconds_no_annotations": round(pull_s, 2),
            "annotations_via_api": args.annotate,
            "annotations_per_s_4_threads": round(args.annotate / annotate_s, 1),
            "pull_seconds_with_annotations": round(pull_annotated_s, 2),
            "materialise_images_per_s": round(materialise_rate, 1),
            "server_first_start_seconds": round(start_s, 1),
            "label_studio": config.label_studio_version,
            "database": "sqlite (label-studio default)",
            "cpus": os.cpu_count(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "note": "push timed with review images already materialised (hard links of a few real "
                    "photos under 20,000 keys); materialise rate measured separately on 200 images",
        }
        write_json_atomic(out, args.out)
        print(json.dumps(out, indent=2))
    finally:
        server.stop(config)
        shutil.rmtree(work, ignore_errors=True)


def _annotate(client: Client, token: str, task_id: int) -> None:
    result = [{"from_name": "decision", "to_name": "image", "type": "choices", "value": {"choices": ["drop"]}}]
    client.as_user(token).post(f"/api/tasks/{task_id}/annotations/", json={"result": result, "lead_time": 1.0})


def _sources(run: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(run / "candidates" / "part-00000.parquet", columns=["source"])["source"].to_pylist()


def _fill_media(run: Path, keys: list[str], done: int) -> None:
    """The remaining keys' media as hard links of the first few (same pixels, no re-encoding)."""
    folder = run / "review" / "media"
    firsts = [folder / media.media_name(k) for k in keys[:done]]
    for i, key in enumerate(keys[done:], start=done):
        target = folder / media.media_name(key)
        if not target.exists():
            os.link(firsts[i % 8], target)


if __name__ == "__main__":
    main()
