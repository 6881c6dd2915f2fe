"""GuidedMoE's auxiliary loss with two data-parallel processes equals one process on all their tokens.

The balance loss is not linear in the tokens (load fraction x mean router probability), so averaging
each rank's own balance loss is a different loss; the layer balances the global batch instead.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import free_port
from torch.utils.checkpoint import checkpoint
from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2MLP

from moon_swift.core.markup import TOKEN_ATTRIBUTE, TOKEN_CATEGORY
from moon_swift.modeling.guided_moe import GuidedMoE, MoeSettings

TEXT_CONFIG = Qwen2_5_VLConfig(text_config={"hidden_size": 16, "intermediate_size": 24}).text_config
WORLD = 2


def make_moe() -> GuidedMoE:
    torch.manual_seed(0)
    moe = GuidedMoE(TEXT_CONFIG, MoeSettings(4, 2, True, False, aux_loss_coef=0.5, z_loss_coef=0.1), Qwen2MLP)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return moe


def rank_tokens() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(hidden states, token types, valid mask) per rank: 7 tokens on rank 0, 12 (3 of them padding) on rank 1."""
    generator = torch.Generator().manual_seed(1)
    parts = []
    for n, padding in ((7, 0), (12, 3)):
        x = torch.randn(1, n, 16, generator=generator) + 0.3 * len(parts)  # the ranks route differently
        types = torch.zeros(1, n, dtype=torch.long)
        types[0, 1], types[0, 2] = TOKEN_CATEGORY, TOKEN_ATTRIBUTE
        valid = torch.ones(1, n, dtype=torch.bool)
        valid[0, n - padding :] = False
        parts.append((x, types, valid))
    return parts


def step(moe: GuidedMoE, x, types, valid, *, scale: float, reentrant: bool | None):
    """A main loss that sums over tokens (times ``scale``) plus the injected aux loss; returns the grads."""
    moe.zero_grad()
    moe.set_routing_context(types, valid)
    x = x.clone().requires_grad_()
    out = moe(x) if reentrant is None else checkpoint(moe, x, use_reentrant=reentrant)
    (scale * out.pow(2).sum()).backward()
    return {name: p.grad.clone() for name, p in moe.named_parameters()}


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        x, types, valid = rank_tokens()[rank]
        results = {}
        for reentrant in (None, True, False):
            moe = make_moe()
            grads = step(moe, x, types, valid, scale=WORLD, reentrant=reentrant)  # the losses scale by world
            for grad in grads.values():  # what DDP / DeepSpeed do: average over ranks
                dist.all_reduce(grad)
                grad /= WORLD
            results[reentrant] = {"grads": grads, "aux": moe.last_aux_loss, "load": moe.last_load}
        with torch.no_grad():  # evaluation: no collective, this rank's own tokens
            moe.set_routing_context(types, valid)
            moe(x)
        results["no_grad_aux"] = moe.last_aux_loss
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_balance_the_global_batch_like_one_process(tmp_path):
    out = str(tmp_path / "rank")
    mp.spawn(_rank, args=(free_port(), out), nprocs=WORLD)
    ranks = [torch.load(f"{out}.{rank}") for rank in range(WORLD)]

    parts = rank_tokens()
    x, types, valid = (torch.cat([part[i] for part in parts], dim=1) for i in range(3))
    single = make_moe()
    expected = step(single, x, types, valid, scale=1.0, reentrant=None)
    for reentrant in (None, True, False):
        for result in ranks:
            got = result[reentrant]
            torch.testing.assert_close(got["aux"], single.last_aux_loss, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(got["load"], single.last_load)
            for name, grad in expected.items():
                torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)

    local = make_moe()
    step(local, *parts[1], scale=1.0, reentrant=None)
    torch.testing.assert_close(ranks[1]["no_grad_aux"], local.last_aux_loss)
    assert abs(float(local.last_aux_loss) - float(single.last_aux_loss)) > 1e-3  # balancing per rank would differ
