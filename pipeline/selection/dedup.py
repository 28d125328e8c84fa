"""Near-duplicate helpers shared by both selection engines: pHash bands and connected components.

Banding (multi-index hashing): the 64 pHash bits are cut into B contiguous bands. Two hashes
within Hamming distance h have, by pigeonhole, at least one band where they differ in at most
r = ceil((h + 1) / B) - 1 bits. Each hash is joined on (band, band value XOR a flip of <= r bits)
against the exact band values of the others, and candidates are verified with
popcount(a XOR b) <= h: every pair is found and only pairs close in some band are compared.
r = 0 is plain banding (B > h). Wide bands (B = 2, r = 1 for h <= 3) keep candidates few even at
10^7+ hashes, where 16-bit bands would compare billions of pairs. A pair whose band values differ
by a flip f != 0 is probed only from the side with a 0 at f's lowest set bit (the other has a 1
there), so each pair costs one probe: about half of the flips of a value are probed
(sql.band_edges_sql). The engine joins, one band at a time; only the verified pairs (few) come
back to Python for the connected components.
"""
from __future__ import annotations

import math

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


def probe_radius(bands: int, hamming: int) -> int:
    """Bits flipped per band so that every pair within `hamming` is found (pigeonhole)."""
    return -(-(hamming + 1) // bands) - 1


MAX_FLIPS_PER_BAND = 5000


def band_flips(bands: int, hamming: int) -> pa.Table:
    """(band, flip, low): XOR masks of at most probe_radius bits inside each band, 0 included, and
    each mask's lowest set bit (0 for the mask 0). A pair of band values that differ by `flip`
    has a 0 at `low` in exactly one of the two: probing only from that one finds the pair once."""
    radius = probe_radius(bands, hamming)
    rows_band, rows_flip, rows_low = [], [], []
    for band, _, mask in band_layout(bands):
        width = 64 if mask == -1 else mask.bit_length()
        count = sum(math.comb(width, k) for k in range(radius + 1))
        if count > MAX_FLIPS_PER_BAND:
            raise ValueError(
                f"near_dup_hamming={hamming} with near_dup_bands={bands} needs {count} probes per band: "
                "use more bands (see README, select)"
            )
        masks = {0}
        for _ in range(radius):
            masks |= {m | (1 << b) for m in masks for b in range(width)}
        masks = sorted(masks)
        rows_band += [band] * len(masks)
        rows_flip += [_signed(m) for m in masks]
        rows_low += [_signed(m & -m) for m in masks]
    return pa.table({"band": pa.array(rows_band, pa.int64()), "flip": pa.array(rows_flip, pa.int64()),
                     "low": pa.array(rows_low, pa.int64())})


def _signed(mask: int) -> int:
    return mask - (1 << 64) if mask >= 1 << 63 else mask


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
