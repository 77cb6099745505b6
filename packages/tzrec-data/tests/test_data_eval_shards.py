"""Multi-process evaluation: every row once, the same number of batches on every rank."""

import numpy as np
import pyarrow as pa
import pytest

from tzrec.core.errors import DataError
from tzrec.data import CsvDataset, ParquetDataset, create_features

FEATS = ('id_feature {feature_name: "uid" embedding_dim: 4 num_buckets: 100000}',)


def _columns(n, start=0):
    ids = np.arange(start, start + n)
    return {"uid": pa.array(ids), "label": pa.array(ids % 2)}


def _rank_batches(feature_configs, data_config, path, world, bs=4, workers=0):
    dc = data_config(
        f'dataset_type: ParquetDataset batch_size: 64 eval_batch_size: {bs} label_fields: "label" '
        f"num_workers: {workers}"
    )
    fs = create_features(feature_configs(*FEATS), dc)
    out = []
    for rank in range(world):
        ds = ParquetDataset(dc, fs, path, mode="eval", rank=rank, world_size=world)
        loader = ds.make_dataloader() if workers else ds
        out.append([b.sparse_features["__BASE__"]["uid"].values().tolist() for b in loader])
    return out


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize(
    "layout",
    [
        [(9, None)],  # one file, one row group: fewer units than ranks
        [(10, 3)],  # row groups of 3 rows
        [(5, None), (0, None), (6, 2)],  # several files, one of them empty
    ],
    ids=["one-group", "row-groups", "files"],
)
def test_every_rank_reads_a_disjoint_share_of_equal_batch_count(
    feature_configs, data_config, write_parquet, world, layout
):
    paths, start = [], 0
    for i, (n, group) in enumerate(layout):
        paths.append(write_parquet(f"e{i}.parquet", _columns(n, start), row_group_size=group))
        start += n
    ranks = _rank_batches(feature_configs, data_config, ",".join(paths), world)
    got = [v for batches in ranks for b in batches for v in b]
    assert sorted(got) == list(range(start))  # every row exactly once
    counts = {len(batches) for batches in ranks}
    assert len(counts) == 1  # ranks step together without dropping a batch
    assert all(1 <= len(b) <= 4 for batches in ranks for b in batches)
    one = _rank_batches(feature_configs, data_config, ",".join(paths), 1)
    assert [v for b in one[0] for v in b] == list(range(start))


def test_dataloader_workers_split_a_rank_share(feature_configs, data_config, write_parquet):
    path = write_parquet("w.parquet", _columns(37), row_group_size=5)
    ranks = _rank_batches(feature_configs, data_config, path, 2, bs=4, workers=2)
    assert sorted(v for r in ranks for b in r for v in b) == list(range(37))
    assert len(ranks[0]) == len(ranks[1]) == 5  # ceil(37 / (2 * 4)) batches each


def test_fewer_rows_than_ranks_is_an_error_naming_input_and_world_size(
    feature_configs, data_config, write_parquet
):
    path = write_parquet("tiny.parquet", _columns(2))
    with pytest.raises(DataError) as err:
        _rank_batches(feature_configs, data_config, path, 3)
    assert str(err.value) == (
        f"{path}: 2 rows to evaluate cannot give each of the 3 ranks (world size 3) data; "
        "evaluate with at most 2 process(es)"
    )


def test_csv_evaluation_with_several_processes_is_refused(tmp_path, feature_configs, data_config):
    p = tmp_path / "e.csv"
    p.write_text("uid,label\n" + "".join(f"{i},{i % 2}\n" for i in range(8)))
    dc = data_config(
        'dataset_type: CsvDataset batch_size: 4 label_fields: "label" with_header: true'
    )
    fs = create_features(feature_configs(*FEATS), dc)
    ds = CsvDataset(dc, fs, str(p), mode="eval", rank=0, world_size=2)
    with pytest.raises(DataError, match=r"evaluation with 2 processes needs row counts"):
        list(ds)
    # one process, and training with two, read csv as before
    assert len(list(CsvDataset(dc, fs, str(p), mode="eval", rank=0, world_size=1))) == 2
    assert list(CsvDataset(dc, fs, str(p), mode="train", rank=1, world_size=2))


@pytest.mark.parametrize(("mode", "world"), [("eval", 1), ("eval", 3), ("train", 1)])
def test_num_batches_counts_a_pass_up_front(
    feature_configs, data_config, write_parquet, tmp_path, mode, world
):
    """What progress bars show as their total equals the batches the pass yields."""
    path = write_parquet("n.parquet", _columns(23), row_group_size=5)
    dc = data_config(
        'dataset_type: ParquetDataset batch_size: 4 eval_batch_size: 4 label_fields: "label" '
        "with_header: true"
    )
    fs = create_features(feature_configs(*FEATS), dc)
    ds = ParquetDataset(dc, fs, path, mode=mode, rank=0, world_size=world)
    assert ds.num_batches() == len(list(ds))
    assert ds.num_batches() == {1: 6, 3: 2}[world]  # ceil(23/4); ceil(23 / (3 * 4))
    csv = tmp_path / "n.csv"
    csv.write_text("uid,label\n1,0\n")
    assert CsvDataset(dc, fs, str(csv), mode=mode).num_batches() is None
