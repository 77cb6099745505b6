"""Experts and gates of multi-task models, against hand-computed values and their formulas."""

import pytest
import torch

from tzrec.models.modules.experts import ExtractionNet, MMoE
from tzrec.models.modules.gates import EPNet, GateNU, PPNet, mix_experts

MLP2 = {"hidden_units": [6, 4]}


def test_mix_experts_weights_experts_by_softmax_of_gate_logits():
    # softmax([0, ln 3]) = [0.25, 0.75]
    logits = torch.tensor([[0.0, torch.log(torch.tensor(3.0))]])
    experts = torch.tensor([[[1.0, 2.0], [5.0, 6.0]]])
    torch.testing.assert_close(mix_experts(logits, experts), torch.tensor([[4.0, 5.0]]))


@pytest.mark.parametrize("gate_mlp", [None, {"hidden_units": [3]}], ids=["linear", "gate_mlp"])
def test_mmoe_task_output_is_the_gate_softmax_mixture_of_every_expert(gate_mlp):
    torch.manual_seed(0)
    mmoe = MMoE(5, MLP2, num_expert=3, num_task=2, gate_mlp=gate_mlp).eval()
    x = torch.randn(7, 5)
    outputs = mmoe(x)
    assert mmoe.output_dim() == 4 and len(outputs) == 2
    experts = [e(x) for e in mmoe.expert_mlps]
    for t, out in enumerate(outputs):
        gate_in = mmoe.gate_mlps[t](x) if gate_mlp else x
        w = torch.softmax(mmoe.gate_finals[t](gate_in), dim=1)
        expected = sum(w[:, e : e + 1] * experts[e] for e in range(3))
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(mmoe.gate_weights(x)[t], w)
        torch.testing.assert_close(w.sum(1), torch.ones(7))


def test_mmoe_with_one_expert_gives_every_task_that_expert():
    mmoe = MMoE(5, MLP2, num_expert=1, num_task=3).eval()
    x = torch.randn(4, 5)
    for out in mmoe(x):
        torch.testing.assert_close(out, mmoe.expert_mlps[0](x))


def test_mmoe_refuses_zero_experts():
    with pytest.raises(ValueError, match="num_expert must be > 0"):
        MMoE(5, MLP2, num_expert=0, num_task=2)


def _mix(gate: torch.nn.Module, selector: torch.Tensor, outs: list[torch.Tensor]) -> torch.Tensor:
    w = torch.softmax(gate(selector), dim=1)
    return sum(w[:, i : i + 1] * o for i, o in enumerate(outs))


def test_extraction_net_mixes_own_and_shared_experts_per_task_and_all_for_shared():
    torch.manual_seed(0)
    net = ExtractionNet(
        [5, 3],
        4,
        share_num=2,
        expert_num_per_task=2,
        task_expert_mlp=MLP2,
        share_expert_mlp={"hidden_units": [4]},
    ).eval()
    x = [torch.randn(6, 5), torch.randn(6, 3)]
    s = torch.randn(6, 4)
    outs, shared = net(x, s)
    assert net.output_dims() == ([4, 4], 4)
    shared_e = [e(s) for e in net.shared_experts]
    own = [[e(x[t]) for e in net.task_experts[t]] for t in range(2)]
    for t in range(2):
        # task t: gate over its own 2 experts then the 2 shared ones
        torch.testing.assert_close(outs[t], _mix(net.task_gates[t], x[t], own[t] + shared_e))
    # shared: gate over task 0's, task 1's, then the shared experts
    torch.testing.assert_close(shared, _mix(net.shared_gate, s, own[0] + own[1] + shared_e))


def test_last_extraction_level_has_no_shared_gate_or_output():
    net = ExtractionNet([5, 5], 5, 1, 1, MLP2, MLP2, final=True)
    outs, shared = net([torch.randn(2, 5)] * 2, torch.randn(2, 5))
    assert shared is None and net.shared_gate is None
    assert net.output_dims() == ([4, 4], 0)
    assert [o.shape for o in outs] == [(2, 4), (2, 4)]


def test_extraction_net_without_shared_experts_mixes_task_experts_only():
    net = ExtractionNet([5, 5], 5, 0, 2, MLP2)
    outs, shared = net([torch.randn(3, 5)] * 2, torch.randn(3, 5))
    assert net.task_gates[0].out_features == 2 and net.shared_gate.out_features == 4
    assert shared.shape == (3, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"share_num": 1, "share_expert_mlp": None}, "share_num > 0 needs share_expert_net"),
        ({"share_num": 1, "share_expert_mlp": {"hidden_units": [3]}}, "must match"),
        ({"expert_num_per_task": 0}, "expert_num_per_task must be > 0"),
    ],
)
def test_extraction_net_refuses_bad_expert_settings(kwargs, message):
    args = {"share_num": 0, "expert_num_per_task": 1, "task_expert_mlp": MLP2, **kwargs}
    with pytest.raises(ValueError, match=message):
        ExtractionNet([5], 5, **args)


def test_gate_nu_is_gamma_times_a_sigmoid():
    gate = GateNU(3, 4, 2, gamma=2.0)
    torch.nn.init.zeros_(gate.dense_layers[2].weight)
    torch.nn.init.zeros_(gate.dense_layers[2].bias)
    # zero output layer: 2 * sigmoid(0) = 1, the identity scale
    torch.testing.assert_close(gate(torch.randn(5, 3)), torch.ones(5, 2))
    big = GateNU(3, 4, 2, gamma=3.0)
    out = big(torch.randn(100, 3) * 10)
    assert out.min() >= 0 and out.max() <= 3.0
    l1, _, l2, _ = big.dense_layers
    x = torch.randn(4, 3)
    torch.testing.assert_close(big(x), 3.0 * torch.sigmoid(l2(torch.relu(l1(x)))))


def test_epnet_scales_the_main_embedding_and_stops_its_gradient_through_the_gate():
    torch.manual_seed(0)
    ep = EPNet(main_dim=4, domain_dim=2, hidden_dim=3, gamma=2.0)
    main = torch.randn(5, 4, requires_grad=True)
    domain = torch.randn(5, 2)
    out = ep(main, domain)
    gate = ep.gate_nu(torch.cat([domain, main.detach()], dim=1))
    torch.testing.assert_close(out, gate * main)
    out.sum().backward()
    # d(gate * main)/d main = gate: no gradient flows into main through the gate input
    torch.testing.assert_close(main.grad, gate.detach())


def test_ppnet_layers_are_scaled_by_their_gate_units_per_task():
    torch.manual_seed(0)
    pp = PPNet(4, 3, num_task=2, hidden_units=[5, 2], activation="nn.ReLU").eval()
    main, uia = torch.randn(6, 4), torch.randn(6, 3)
    outs = pp(main, uia)
    assert pp.output_dim() == 2 and [o.shape for o in outs] == [(6, 2), (6, 2)]
    gate_in = torch.cat([uia, main], dim=1)
    for t in range(2):
        h = main
        for layer in pp.towers[t]:
            h = torch.relu(layer["linear"](h)) * layer["gate"](gate_in)
        torch.testing.assert_close(outs[t], h)
    # the task towers have their own parameters
    assert not torch.equal(outs[0], outs[1])


def test_ppnet_refuses_dropout_of_the_wrong_length():
    with pytest.raises(ValueError, match="dropout_ratio has 3 values"):
        PPNet(4, 3, 1, [5, 2], dropout_ratio=[0.1, 0.1, 0.1])
