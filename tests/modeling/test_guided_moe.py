import pytest
import torch
from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2MLP

from moon_swift.core.markup import TOKEN_ATTRIBUTE, TOKEN_CATEGORY
from moon_swift.modeling.guided_moe import GuidedMoE, MoeSettings

TEXT_CONFIG = Qwen2_5_VLConfig(text_config={"hidden_size": 16, "intermediate_size": 24}).text_config


def make_moe(guided=True, shared=False, experts=4, top_k=2, aux=0.01, z=0.001, seed=0):
    torch.manual_seed(seed)
    settings = MoeSettings(experts, top_k, guided, shared, aux, z)
    moe = GuidedMoE(TEXT_CONFIG, settings, Qwen2MLP)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return moe


def reference(moe, x, types, valid):
    """Token-by-token reference of MOON's guided MoE (slow, obviously correct)."""
    s = moe.settings
    outputs, probs_rows, chosen = [], [], []
    for token, kind, ok in zip(x, types.tolist(), valid.tolist(), strict=True):
        if s.guided_experts and kind == TOKEN_CATEGORY:
            y = moe.category_expert(token[None])[0]
        elif s.guided_experts and kind == TOKEN_ATTRIBUTE:
            y = moe.attribute_expert(token[None])[0]
        else:
            logits = moe.router(token[None])[0].float()
            probs = logits.softmax(-1)
            weights, experts = probs.topk(s.top_k)
            weights = weights / weights.sum()
            y = sum(w * moe.experts[e](token[None])[0] for w, e in zip(weights, experts.tolist(), strict=True))
            if ok:
                probs_rows.append((probs, logits))
                chosen += experts.tolist()
        if s.shared_expert:
            y = (y + moe.shared_expert(token[None])[0]) / 2
        outputs.append(y)
    out = torch.stack(outputs)
    probs = torch.stack([p for p, _ in probs_rows])
    logits = torch.stack([lg for _, lg in probs_rows])
    load = torch.bincount(torch.tensor(chosen), minlength=s.num_experts).float() / len(chosen)
    balance = s.num_experts * (load * probs.mean(0)).sum()
    z_loss = torch.logsumexp(logits, -1).square().mean()
    return out, s.aux_loss_coef * balance + s.z_loss_coef * z_loss


def inputs(n=24, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n // 2, 16, generator=generator)
    types = torch.zeros(2, n // 2, dtype=torch.long)
    types[0, 2:5] = TOKEN_CATEGORY
    types[1, 1:3] = TOKEN_ATTRIBUTE
    valid = torch.ones(2, n // 2, dtype=torch.bool)
    valid[1, -3:] = False  # padding: excluded from the balance statistics
    return x, types, valid


@pytest.mark.parametrize("guided, shared, top_k", [(True, False, 2), (False, True, 1), (True, True, 3)])
def test_grouped_dispatch_matches_the_token_by_token_reference(guided, shared, top_k):
    moe = make_moe(guided, shared, top_k=top_k)
    x, types, valid = inputs()
    moe.set_routing_context(types, valid)
    out = moe(x)
    expected, expected_aux = reference(moe, x.reshape(-1, 16), types.reshape(-1), valid.reshape(-1))
    torch.testing.assert_close(out.reshape(-1, 16), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(moe.last_aux_loss, expected_aux.detach(), atol=1e-6, rtol=1e-5)


def test_guided_tokens_reach_only_their_expert():
    moe = make_moe()
    x, types, valid = inputs()
    moe.set_routing_context(types, valid)
    with torch.no_grad():
        moe.category_expert.down_proj.weight.zero_()
        out = moe(x)
    assert (out[types == TOKEN_CATEGORY] == 0).all()
    assert (out[types != TOKEN_CATEGORY].abs().sum(-1) > 0).all()


def test_aux_loss_reaches_the_router_gradient_exactly_once():
    x, types, valid = inputs()
    moe = make_moe()
    moe.set_routing_context(types, valid)
    moe(x).pow(2).sum().backward()  # the "main loss" only; the aux loss is injected
    injected = moe.router.weight.grad.clone()

    twin = make_moe()
    out, aux = reference(twin, x.reshape(-1, 16), types.reshape(-1), valid.reshape(-1))
    (out.pow(2).sum() + aux).backward()
    torch.testing.assert_close(injected, twin.router.weight.grad, atol=1e-5, rtol=1e-4)


def test_aux_gradient_survives_reentrant_checkpointing():
    x, types, valid = inputs()
    plain, checkpointed = make_moe(), make_moe()
    for moe in (plain, checkpointed):
        moe.set_routing_context(types, valid)
    plain(x.clone().requires_grad_()).sum().backward()
    x_ckpt = x.clone().requires_grad_()
    torch.utils.checkpoint.checkpoint(checkpointed, x_ckpt, use_reentrant=True).sum().backward()
    torch.testing.assert_close(plain.router.weight.grad, checkpointed.router.weight.grad)


def test_an_expert_without_tokens_gets_zero_gradient_not_none_and_no_nan():
    moe = make_moe(experts=4, top_k=1)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0] = 10.0  # every token prefers expert 0 (for positive sums)
    x = torch.rand(1, 8, 16) + 0.1
    moe.set_routing_context(torch.zeros(1, 8, dtype=torch.long), None)  # no category/attribute tokens either
    out = moe(x)
    assert moe.last_load.tolist() == [1.0, 0.0, 0.0, 0.0]
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(moe.last_aux_loss)
    for name, p in moe.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert moe.experts[3].up_proj.weight.grad.abs().sum() == 0
    assert moe.category_expert.up_proj.weight.grad.abs().sum() == 0


def test_all_padding_routes_without_aux_loss():
    moe = make_moe()
    x = torch.randn(1, 4, 16)
    moe.set_routing_context(None, torch.zeros(1, 4, dtype=torch.bool))
    out = moe(x)
    assert torch.isfinite(out).all() and float(moe.last_aux_loss) == 0.0


def test_token_types_of_the_wrong_length_are_refused():
    moe = make_moe()
    moe.set_routing_context(torch.zeros(1, 5, dtype=torch.long), None)
    with pytest.raises(ValueError, match="token_type_ids must have the shape of input_ids"):
        moe(torch.randn(1, 4, 16))


class _RecordedOps(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("guided", [True, False])
def test_forward_and_backward_run_no_op_whose_output_shape_depends_on_the_data(guided):
    """On a GPU each of these ops waits for the device (a host sync); the expert counts are read once, by
    ``tolist``, which is no aten op."""
    moe = make_moe(guided=guided)
    x, types, valid = inputs()
    moe.set_routing_context(types, valid)
    with _RecordedOps() as recorded:
        moe(x.clone().requires_grad_()).sum().backward()
    syncing = {"aten.nonzero", "aten.masked_select", "aten._local_scalar_dense", "aten.bincount", "aten.unique"}
    assert "aten.mm" in recorded.ops  # the recording sees the layer's ops
    assert syncing.isdisjoint(recorded.ops), sorted(syncing & set(recorded.ops))
