import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.protobuf import text_format

from tzrec.protos import data_pb2, feature_pb2


def _features(*texts):
    return [text_format.Parse(t, feature_pb2.FeatureConfig()) for t in texts]


def _data_config(text=""):
    return text_format.Parse(text or "dataset_type: ParquetDataset", data_pb2.DataConfig())


@pytest.fixture
def feature_configs():
    return _features


@pytest.fixture
def data_config():
    return _data_config


@pytest.fixture
def write_parquet(tmp_path):
    def write(name, columns, row_group_size=None):
        path = tmp_path / name
        pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
        return str(path)

    return write
