"""UltraHSTU: DlrmHSTU with a mixture of transducers (registered as ``ultra_hstu``).

ULTRA-HSTU (arXiv 2602.16986, TorchEasyRec's ``ultra_hstu``) is :mod:`tzrec.hstu.dlrm_hstu`
with ``repeated HSTU hstu``: one transducer (preprocessor → positional encoder → STU stack
→ postprocessor) per channel. A channel named ``<name>`` reads its history from the
JAGGED_SEQUENCE groups ``<name>``, ``<name>_action``, ``<name>_watchtime`` and
``<name>_timestamp``; an unnamed channel reads ``uih``, ``uih_action``, ... . The
``candidate``, ``candidate_timestamp`` and ``contextual`` groups are shared. Every candidate's
outputs of the channels are concatenated (channel order) into the user embedding the fusion
MTL tower multiplies with ``item_mlp(candidate)`` (whose width is the sum of the channels'
``embedding_dim``). One unnamed channel is DlrmHSTU exactly (same parameter names too).

The other ULTRA-HSTU pieces live in the STU (:mod:`tzrec.hstu.stu`) and so work for
DlrmHSTU as well: semi-local attention (``stu.sla_k1``/``sla_k2``), mid-stack truncation
(``attn_truncation_split_layer``/``attn_truncation_tail_len``) and selective recomputation
(``stu.recompute_*``).
"""

from __future__ import annotations

from torch import nn

from tzrec.core.errors import ConfigError
from tzrec.hstu.dlrm_hstu import DlrmHSTU
from tzrec.hstu.pipeline import HSTUEncoder, role_groups
from tzrec.hstu.preprocessors import (
    CANDIDATE,
    CANDIDATE_TIMESTAMP,
    CONTEXTUAL,
    UIH,
    UIH_ACTION,
    UIH_TIMESTAMP,
    UIH_WATCHTIME,
)
from tzrec.protos import model_pb2

#: history roles and the suffix a channel's group name adds for each
CHANNEL_ROLES = {
    UIH: "",
    UIH_ACTION: "_action",
    UIH_WATCHTIME: "_watchtime",
    UIH_TIMESTAMP: "_timestamp",
}


def channel_groups(
    feature_groups: list[model_pb2.FeatureGroupConfig], name: str, where: str
) -> dict[str, model_pb2.FeatureGroupConfig]:
    """A channel's history groups by role (``uih`` → ``<name>``, ``uih_action`` → ...).

    Raises:
        ConfigError: the channel's ``<name>`` group is missing, or one has the wrong type.
    """
    prefix = name or UIH
    by_name = {g.group_name: g for g in feature_groups}
    if prefix not in by_name:
        raise ConfigError(
            f"{where}: needs a JAGGED_SEQUENCE feature group named '{prefix}' "
            f"(groups: {', '.join(by_name) or 'none'})"
        )
    out: dict[str, model_pb2.FeatureGroupConfig] = {}
    for role, suffix in CHANNEL_ROLES.items():
        group = by_name.get(prefix + suffix)
        if group is None:
            continue
        if group.group_type != model_pb2.JAGGED_SEQUENCE:
            raise ConfigError(
                f"feature group '{group.group_name}' must be JAGGED_SEQUENCE for ultra_hstu"
            )
        out[role] = group
    return out


class UltraHSTU(DlrmHSTU):
    """UltraHSTU (``model_config.ultra_hstu``): one HSTU transducer per ``hstu`` channel.

    Raises:
        ConfigError: no channel, several channels without unique non-empty names, a
            channel's groups missing.
    """

    field = "model_config.ultra_hstu"

    def _role_groups(self) -> dict[str, model_pb2.FeatureGroupConfig]:
        groups = list(self._base_model_config.feature_groups)
        channels = list(self._model_config.hstu)
        if not channels:
            raise ConfigError(f"{self.field}.hstu: set at least one channel")
        names = [c.name for c in channels]
        if len(channels) > 1 and (not all(names) or len(set(names)) != len(names)):
            raise ConfigError(
                f"{self.field}.hstu: with {len(channels)} channels every channel needs a "
                f"unique non-empty name, got {names}"
            )
        if CANDIDATE not in {g.group_name for g in groups}:
            raise ConfigError(
                f"{self.field} needs a JAGGED_SEQUENCE feature group named '{CANDIDATE}'"
            )
        shared = role_groups(groups, (CANDIDATE, CONTEXTUAL, CANDIDATE_TIMESTAMP), "ultra_hstu")
        self._channel_groups = [
            {**channel_groups(groups, c.name, f"{self.field}.hstu[{i}]"), **shared}
            for i, c in enumerate(channels)
        ]
        # every group the embedding group must produce, keyed by a unique name
        out = dict(shared)
        for chg in self._channel_groups:
            for role in CHANNEL_ROLES:
                if role in chg:
                    out[chg[role].group_name] = chg[role]
        return out

    def _build_encoders(
        self, groups: dict[str, model_pb2.FeatureGroupConfig], num_contextual: int, kernel: int
    ) -> None:
        channels = list(self._model_config.hstu)
        encoders = [
            self._encoder(hstu, chg, num_contextual, kernel, f"{self.field}.hstu[{i}]")
            for i, (hstu, chg) in enumerate(zip(channels, self._channel_groups, strict=True))
        ]
        if len(encoders) == 1:
            self.encoder = encoders[0]  # DlrmHSTU's parameter names
        else:
            self.encoders = nn.ModuleList(encoders)

    def encoders_list(self) -> list[HSTUEncoder]:
        """One transducer per channel, in config order."""
        if len(self._model_config.hstu) == 1:
            return [self.encoder]
        return list(self.encoders)
