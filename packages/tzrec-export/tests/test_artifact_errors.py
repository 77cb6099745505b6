"""A damaged export directory is reported in one line naming the damaged file."""

import json

import pytest
import torch

from tzrec.core.errors import ConfigError
from tzrec.export.artifact import META_FILE, SCRIPTED, load_exported


class Double(torch.nn.Module):
    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"y": inputs["x"] * 2}


def export_dir(tmp_path):
    path = tmp_path / "export"
    path.mkdir()
    torch.jit.save(torch.jit.script(Double()), str(path / SCRIPTED))
    meta = {"format": "torchscript", "inputs": ["x"], "outputs": ["y"]}
    (path / META_FILE).write_text(json.dumps(meta))
    return path


def test_an_intact_export_loads_and_runs(tmp_path):
    model = load_exported(export_dir(tmp_path))
    assert model({"x": torch.tensor([1.5])})["y"].tolist() == [3.0]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_scripted_model_names_the_file(tmp_path, damage):
    path = export_dir(tmp_path)
    data = (path / SCRIPTED).read_bytes()
    new = {"truncated": data[: len(data) // 2], "garbage": b"not a zip" * 50, "empty": b""}
    (path / SCRIPTED).write_bytes(new[damage])
    with pytest.raises(ConfigError) as e:
        load_exported(path)
    line = str(e.value)
    assert "\n" not in line
    assert line.startswith(f"{path / SCRIPTED}: cannot be loaded, the file is corrupt")
    assert line.endswith("re-export the model")


def test_a_missing_scripted_model_and_a_corrupt_meta_name_the_file(tmp_path):
    path = export_dir(tmp_path)
    (path / SCRIPTED).unlink()
    with pytest.raises(ConfigError, match=f"^{path / SCRIPTED}: missing from the exported"):
        load_exported(path)
    (path / META_FILE).write_text('{"format": "torch')
    with pytest.raises(ConfigError, match=f"^{path / META_FILE}: not valid JSON"):
        load_exported(path)
