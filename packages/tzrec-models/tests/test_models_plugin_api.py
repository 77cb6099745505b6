"""The public plugin API: one import, the serving contracts, and checks that use them."""

import sys
import types

import torch
from torch import nn

from tzrec.core import plugins
from tzrec.core.hookspecs import hookimpl
from tzrec.models import plugin_api
from tzrec.models.plugin_api import (
    BaseModel,
    EmbeddingGroup,
    RankModel,
    ServableModel,
    ServableTower,
    export_contract_error,
    in_serving_view,
)


def test_the_api_names_are_importable_and_hooks_need_no_torch():
    for name in plugin_api.__all__:
        assert getattr(plugin_api, name) is not None, name
    code = (
        "import sys; from tzrec.models.plugin_api import hookimpl, hookspec, Declare; "
        "print('torch' in sys.modules)"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # a plugin's hook module stays cheap to import


class NoDense(RankModel):
    """A ranking model that only implements predict: trains, but cannot be exported."""


class Dense(RankModel):
    def dense_forward(self, grouped):
        return self.output(grouped["all"])


def test_export_contract_of_classes():
    from tzrec.models.match import DSSM
    from tzrec.models.rank import MultiTower, MultiTowerDIN

    for cls in (DSSM, MultiTower, MultiTowerDIN, Dense):
        assert export_contract_error(cls) is None, cls
    assert NoDense.export_contract_error() == (
        "NoDense implements neither dense_forward(grouped) nor export_towers()"
    )
    assert export_contract_error(nn.Linear) == "Linear is not a tzrec BaseModel"


def test_export_contract_of_an_instance_needs_its_embedding_group():
    model = Dense.__new__(Dense)
    nn.Module.__init__(model)
    assert export_contract_error(model) == (
        "Dense has dense_forward but no embedding_group (an EmbeddingGroup)"
    )
    model.embedding_group = EmbeddingGroup([], [])
    assert export_contract_error(model) is None
    assert isinstance(model, ServableModel)


def test_a_tower_without_the_tower_contract_is_named():
    class Towers(BaseModel):
        def export_towers(self):
            return {"user": nn.Linear(1, 1)}

    model = Towers.__new__(Towers)
    nn.Module.__init__(model)
    assert export_contract_error(model) == (
        "Towers.export_towers()['user'] lacks features, feature_groups or tower_embedding(grouped)"
    )

    class Tower(nn.Module):
        features: list = []
        feature_groups: list = []

        def tower_embedding(self, grouped):
            return grouped["user"]

    assert isinstance(Tower(), ServableTower)


def test_in_serving_view_follows_set_is_inference():
    class View(nn.Module):
        def __init__(self):
            super().__init__()
            self._is_inference = False

    model = Dense.__new__(Dense)
    nn.Module.__init__(model)
    model._is_inference = False
    model.tower = View()
    assert not in_serving_view(model)
    model.set_is_inference(True)
    assert in_serving_view(model) and model.is_inference and model.tower._is_inference
    assert in_serving_view(torch.nn.Linear(1, 1))  # nothing to switch


def test_tzrec_run_refuses_a_model_it_could_not_export_before_training(
    monkeypatch, tmp_path, capsys
):
    from tzrec.core.cli import main

    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "tzrec-data,tzrec-export")
    plugins.reset_plugin_manager()
    module = types.ModuleType("no_dense_plugin")
    module.register_models = hookimpl(lambda register: register("multi_tower", NoDense))
    plugins.get_plugin_manager().add_plugin(module, "nodense", "tzrec-nodense", "1.0")
    config = tmp_path / "p.config"
    config.write_text(
        f'train_input_path: "{tmp_path}/none" eval_input_path: "x" model_dir: "{tmp_path}/m"\n'
        "model_config { multi_tower { } }\n"
    )
    try:
        assert main(["run", "--pipeline_config_path", str(config)]) == 1
    finally:
        plugins.reset_plugin_manager()
    err = capsys.readouterr().err.strip()
    assert err == (
        "tzrec: error: tzrec run exports the trained model, but model 'multi_tower' cannot be "
        "exported: NoDense implements neither dense_forward(grouped) nor export_towers(); use "
        "tzrec train, or implement the export contract (docs/plugins.md)"
    )
    assert not (tmp_path / "m").exists()  # refused before any training
