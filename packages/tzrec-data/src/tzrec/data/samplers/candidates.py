"""Candidate sequences for generative retrieval: ``pos;neg1;neg2;...`` per row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tzrec.core.errors import DataError
from tzrec.data import arrow_utils as au

#: ``Batch.additional_infos`` key: positives per row of a candidate sequence (upstream's name)
CAND_POS_LENGTHS = "cand_pos_lengths"


def combine_neg_as_candidate_sequence(
    pos_data: pa.Array,
    neg_data: pa.Array,
    neg_sample_num: int,
    seq_delim: str,
) -> pa.Array:
    """Join each row's positives with their negatives into one sequence string.

    Args:
        pos_data: positives per row: a string column (one id, or several joined by
            ``seq_delim``), a scalar column or a list column.
        neg_data: negatives, either flat (``neg_sample_num`` per positive, in positive
            order) or a list column with one cell per row.
        neg_sample_num: negatives per positive.
        seq_delim: delimiter of the output sequences.

    Returns:
        A string array; row ``r`` with positives ``p1..pk`` reads
        ``p1;n1_1;...;n1_m;p2;n2_1;...;pk;nk_m`` (``m = neg_sample_num``); a row without
        positives is ``""``.

    Raises:
        DataError: when the negatives do not number ``neg_sample_num`` per positive (the
            message names the first row that does not).
    """
    pos_lists = au.to_list_array(pos_data, seq_delim)
    pos_off = au.list_offsets(pos_lists)
    pos_flat = au.list_values(pos_lists)
    num_pos = len(pos_flat)
    k = int(neg_sample_num)
    neg_data = au.combine(neg_data)
    if au.is_listlike(neg_data.type):
        neg_off = au.list_offsets(neg_data)
        got = np.diff(neg_off)
        want = np.diff(pos_off) * k
        bad = np.nonzero(got != want)[0]
        if len(bad):
            r = int(bad[0])
            raise DataError(
                f"candidate sequence row {r}: expected {int(want[r])} negatives "
                f"({neg_sample_num} per positive), got {int(got[r])}"
            )
        neg_flat = au.list_values(neg_data)
    else:
        neg_flat = neg_data
        if len(neg_flat) != num_pos * k:
            row = _first_short_row(pos_off, len(neg_flat), k)
            raise DataError(
                f"candidate sequence row {row}: expected {k} negatives per positive "
                f"({num_pos * k} for {num_pos} positives), got {len(neg_flat)} negatives"
            )
    pos_str = pos_flat.cast(pa.string())
    neg_str = neg_flat.cast(pa.string())
    tokens = pa.concat_arrays([pos_str, neg_str])
    # per positive j: [j, P + j*k, ..., P + j*k + k-1]
    j = np.arange(num_pos, dtype=np.int64)
    order = np.empty((num_pos, k + 1), dtype=np.int64)
    order[:, 0] = j
    if k:
        order[:, 1:] = num_pos + j[:, None] * k + np.arange(k)[None, :]
    offsets = (pos_off * (k + 1)).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), tokens.take(pa.array(order.ravel())))
    return pc.binary_join(lists, seq_delim)


def _first_short_row(pos_off: np.ndarray, num_neg: int, k: int) -> int:
    """First row whose negatives run out (or the last row when there are too many)."""
    need_end = pos_off[1:] * k
    short = np.nonzero(need_end > num_neg)[0]
    return int(short[0]) if len(short) else max(len(pos_off) - 2, 0)


def append_shared_negatives(
    pos_data: pa.Array,
    neg_data: pa.Array,
    counts: np.ndarray,
    seq_delim: str,
    keep: int | None = None,
) -> pa.Array:
    """Rows' (most recent ``keep``) positives, then ``counts[r]`` of the shared negatives.

    The negatives are dealt out in order (row 0 takes the first ``counts[0]``, ...), so the
    candidate values read row by row are each row's positives and a slice of the batch's
    negatives; a model separates them with the per-row positive counts.

    Args:
        pos_data: positives per row (string joined by ``seq_delim``, scalar or list column).
        neg_data: the batch's negatives, flat (``sum(counts)`` of them).
        counts: negatives appended to every row.
        seq_delim: delimiter of the output sequences.
        keep: positives kept per row (the last ``keep``), None: all.

    Returns:
        A string array, row ``r`` reading ``p1;...;pk;n...``.
    """
    pos_lists = au.to_list_array(pos_data, seq_delim)
    pos_off = au.list_offsets(pos_lists)
    pos_flat = au.list_values(pos_lists)
    idx, pos_len = au.tail_ranges(pos_off, keep)
    if idx is not None:
        pos_flat = pos_flat.take(pa.array(idx))
    neg_flat = au.combine(neg_data)
    if au.is_listlike(neg_flat.type):
        neg_flat = au.list_values(neg_flat)
    counts = np.asarray(counts, dtype=np.int64)
    if len(neg_flat) != int(counts.sum()):
        raise DataError(
            f"candidate sequences: {int(counts.sum())} negative slots for {len(neg_flat)} "
            "sampled negatives"
        )
    num_pos = len(pos_flat)
    tokens = pa.concat_arrays([pos_flat.cast(pa.string()), neg_flat.cast(pa.string())])
    pos_start = np.cumsum(pos_len) - pos_len
    neg_start = num_pos + np.cumsum(counts) - counts
    lengths = pos_len + counts
    order = np.concatenate(
        [
            np.concatenate([np.arange(p, p + n), np.arange(q, q + m)])
            for p, n, q, m in zip(pos_start, pos_len, neg_start, counts, strict=True)
        ]
        or [np.zeros(0, np.int64)]
    ).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), tokens.take(pa.array(order)))
    return pc.binary_join(lists, seq_delim)


def deal_negatives(pos_len: np.ndarray, num_neg: int, max_len: int | None) -> np.ndarray | None:
    """Negatives per row: the last rows fill first (upstream puts all of them in the last).

    Without ``max_len`` the last row takes all; with it, each row holds at most ``max_len``
    items (its positives count). None: the rows have fewer free slots than ``num_neg``.
    """
    pos_len = np.asarray(pos_len, dtype=np.int64)
    if len(pos_len) == 0:
        return pos_len if num_neg == 0 else None
    if not max_len:
        counts = np.zeros(len(pos_len), np.int64)
        counts[-1] = num_neg
        return counts
    room = np.maximum(max_len - np.minimum(pos_len, max_len), 0)[::-1]
    if int(room.sum()) < num_neg:
        return None
    before = np.cumsum(room) - room
    return np.clip(num_neg - before, 0, room)[::-1].copy()
