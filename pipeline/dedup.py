"""Near-duplicate helpers shared by both selection engines: pHash bands and connected components.

Banding: the 64 pHash bits are cut into B contiguous bands. Two hashes within Hamming distance h
differ in at most h bands, so when B > h they agree exactly on at least one band (pigeonhole):
joining on (band, band value) then verifying popcount(a XOR b) <= h finds every pair, and only
pairs that share a band are ever compared. With B <= h the search is approximate (faster).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def band_layout(bands: int) -> list[tuple[int, int, int]]:
    """(band index, bit offset, mask) for `bands` contiguous bands covering 64 bits."""
    if not 1 <= bands <= 64:
        raise ValueError(f"near_dup_bands must be between 1 and 64, got {bands}")
    base, extra = divmod(64, bands)
    layout, offset = [], 0
    for i in range(bands):
        width = base + (1 if i < extra else 0)
        mask = -1 if width == 64 else (1 << width) - 1
        layout.append((i, offset, mask))
        offset += width
    return layout


def search_is_complete(bands: int, hamming: int) -> bool:
    return bands > hamming


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & 0xFFFFFFFFFFFFFFFF).bit_count()


def components(edges: pa.Table) -> pa.Table:
    """Connected components of an undirected graph over int64 pHash values.

    edges: columns p1, p2 (int64). Returns (phash, root) for every node in an edge, root being
    the smallest value of its component, so the result depends only on the edge set (the same
    for every engine and every edge order).
    """
    if edges.num_rows == 0:
        return pa.table({"phash": pa.array([], pa.int64()), "root": pa.array([], pa.int64())})
    a_val = edges.column("p1").to_numpy()
    b_val = edges.column("p2").to_numpy()
    nodes = np.unique(np.concatenate([a_val, b_val]))  # sorted: index order == value order
    a = np.searchsorted(nodes, a_val)
    b = np.searchsorted(nodes, b_val)
    labels = np.arange(nodes.size)
    while True:
        # Min-label propagation along edges, then pointer jumping to shortcut long chains.
        low = np.minimum(labels[a], labels[b])
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        while True:
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels[a], labels[b]):
            break
    return pa.table({"phash": pa.array(nodes, pa.int64()), "root": pa.array(nodes[labels], pa.int64())})
