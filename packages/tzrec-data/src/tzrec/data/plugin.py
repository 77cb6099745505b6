"""tzrec-data's plugin: dataset readers and negative samplers by config name."""

from tzrec.core.hookspecs import Register, hookimpl


@hookimpl
def register_datasets(register: Register) -> None:
    """Readers by ``DatasetType`` name."""
    register("ParquetDataset", "tzrec.data.readers.parquet:ParquetDataset")
    register("CsvDataset", "tzrec.data.readers.csv:CsvDataset")


@hookimpl
def register_samplers(register: Register) -> None:
    """Negative samplers by ``DataConfig`` sampler oneof name."""
    register("negative_sampler", "tzrec.data.samplers.negative:NegativeSampler")
    register("negative_sampler_v2", "tzrec.data.samplers.negative:NegativeSamplerV2")
    register("hard_negative_sampler", "tzrec.data.samplers.negative:HardNegativeSampler")
    register("hard_negative_sampler_v2", "tzrec.data.samplers.negative:HardNegativeSamplerV2")


@hookimpl
def register_commands(register: Register) -> None:
    """``tzrec synth-data``: synthetic data with the columns a pipeline config reads."""
    register("synth-data", "tzrec.data.synth:SynthDataCommand")
