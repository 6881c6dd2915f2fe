"""Cached contrastive steps in-process: the row slicer on a real collated batch, and the cached gradient
against the uncached one (tiny MOON MoE model, fp32), for both losses, a learned temperature, dropout,
reentrant gradient checkpointing and LoRA.

With dropout the uncached reference embeds the same row chunks in one graph from the same seed (a full-batch
forward draws other masks): equality then needs the cached step's second forward to restore each chunk's RNG
state. The MoE auxiliary loss of a cached step is the mean of its chunks' aux losses, so the reference with
MoE aux losses runs the chunks too, injecting with 1 / chunks.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import FASHION_CATALOG, run_cli, swift_executable

from moon_swift.core.errors import MoonInputError
from moon_swift.integrations.swift.batch_rows import TOKEN_KEYS, split_rows
from moon_swift.integrations.swift.cached_steps import CachedSteps, cached_forward, chunk_sizes
from moon_swift.losses.moon_infonce import MoonInfoNCELoss, MoonInfoNCEOptions

TOLERANCE = 1e-5  # max abs difference over every parameter gradient (fp32)
ROWS = 5  # rows per chunk: 16 rows -> 4 chunks of 4


class _Mean:
    def update(self, value):
        pass


class TrainerDouble:
    """The few trainer attributes the losses read."""

    def __init__(self, model):
        self.state = SimpleNamespace(global_step=0)
        self.custom_metrics = {"train": defaultdict(_Mean), "eval": defaultdict(_Mean)}
        self.model = model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from moon_swift.apps.tiny_model import make_tiny
    from moon_swift.modeling.upcycle import upcycle

    root = tmp_path_factory.mktemp("cached-steps")
    make_tiny(root / "base", seed=2, as_base=True)
    moe = {"moe_layers": "all", "num_experts": 4, "moe_top_k": 2, "learnable_temperature": True,
           "init_temperature": 0.07}  # fmt: skip
    upcycle(root / "base", root / "no_aux", noise=0.01, moe_aux_loss_coef=0.0, moe_z_loss_coef=0.0, **moe)
    upcycle(root / "base", root / "aux", noise=0.01, moe_aux_loss_coef=0.5, moe_z_loss_coef=0.01, **moe)
    return {"no_aux": root / "no_aux", "aux": root / "aux"}


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    """4 real swift embedding rows: a title anchor, the product (image + markup) and 2 hard negatives each."""
    out = tmp_path_factory.mktemp("rows")
    command = [str(Path(swift_executable()).with_name("moon-swift")), "prepare-data", "--catalog", str(FASHION_CATALOG),
               "--out", str(out), "--limit", "16", "--hard-negatives", "2"]  # fmt: skip
    assert run_cli(command).returncode == 0
    lines = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    return [row for row in lines if len(row.get("negative_messages") or []) == 2][:4]


def load(model_dir: Path):
    from swift.model import get_model_processor
    from swift.template import get_template

    model, processor = get_model_processor(str(model_dir), model_type="moon", task_type="embedding",
                                           torch_dtype=torch.float32)  # fmt: skip
    template = get_template(processor, template_type="moon")
    template.set_mode("train")
    template.model = model
    return model, template


@pytest.fixture(scope="module")
def moe_model(models):
    return load(models["no_aux"])


@contextlib.contextmanager
def swift_forward(template, model):
    """The model as swift's trainer calls it: the template's pre-forward hook turns ids into inputs_embeds."""
    template.register_post_encode_hook([model])
    try:
        yield
    finally:
        template.remove_post_encode_hook()


def collate(template, rows) -> dict:
    return template.data_collator([template.encode(row) for row in rows])


def make_loss(kind: str, model):
    from swift.loss import loss_map

    args = SimpleNamespace(resume_from_checkpoint=None)
    if kind == "moon_infonce":
        return MoonInfoNCELoss(args, TrainerDouble(model), MoonInfoNCEOptions())
    return loss_map["infonce"](args, TrainerDouble(model))


def gradients(model, embed, batch, loss, seed=1) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    outputs = embed({k: v for k, v in batch.items() if k != "labels"})
    value = loss(outputs, batch["labels"])
    value.backward()
    return float(value), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


class ChunkedReference:
    """Uncached, but the same chunks (padding trimmed: dropout masks take the chunk's shape) embedded in one
    graph, what a cached step must reproduce exactly; the MoE layers inject 1 / chunks of each chunk's aux loss.
    ``aux``: each layer's mean aux loss over the chunks."""

    def __init__(self, model, moe_layers, sizes):
        self.model, self.moe_layers, self.sizes = model, moe_layers, sizes

    def __call__(self, inputs):
        for moe in self.moe_layers:
            moe.aux_grad_scale = 1.0 / len(self.sizes)
        chunks = split_rows(inputs, self.sizes, image_token_id=self.model.config.image_token_id, trim_padding=True)
        outputs, aux = [], []
        for chunk in chunks:
            outputs.append(self.model(**chunk))
            aux.append([float(moe.last_aux_loss) for moe in self.moe_layers])
        for moe in self.moe_layers:
            moe.aux_grad_scale = 1.0
        self.aux = [sum(values) / len(values) for values in zip(*aux, strict=True)]
        joined = {key: torch.cat([o[key] for o in outputs]) for key in ("last_hidden_state", "group_ids")}
        return {**joined, "logit_scale": outputs[0]["logit_scale"]}


def max_difference(expected: dict, got: dict) -> float:
    assert expected.keys() == got.keys()
    return max(float((expected[name] - got[name]).abs().max()) for name in expected)


def test_the_slicer_cuts_a_real_collated_batch_into_rows_that_reassemble_exactly(moe_model, rows):
    model, template = moe_model
    batch = collate(template, rows)
    assert batch["input_ids"].shape[0] == 16 and batch["labels"].shape == (12,)  # 4 samples x 4 rows
    assert batch["position_ids"].shape[:2] == (3, 16) and "pixel_values" in batch
    sizes = [3, 6, 0, 7]
    chunks = split_rows(batch, sizes, image_token_id=model.config.image_token_id, merge_size=2)
    assert all("labels" not in chunk for chunk in chunks)  # per sample: the loss reads them whole
    for key, value in batch.items():
        if key == "labels":
            continue
        parts = [chunk[key] for chunk in chunks if key in chunk]
        dim = 1 if key == "position_ids" else 0
        assert torch.equal(torch.cat(parts, dim=dim), value), key
    for chunk, size in zip(chunks, sizes, strict=True):  # each chunk's images are its rows' own
        assert chunk["input_ids"].shape[0] == size
        patches = int(chunk.get("image_grid_thw", torch.zeros(0, 3)).prod(-1).sum())
        assert int((chunk["input_ids"] == model.config.image_token_id).sum()) == patches // 4  # 2x2 patch merge
        assert chunk.get("pixel_values", torch.zeros(0)).shape[0] == patches
    trimmed = split_rows(batch, sizes, image_token_id=model.config.image_token_id, merge_size=2, trim_padding=True)
    for full, cut in zip(chunks, trimmed, strict=True):  # right padding: a chunk keeps its own longest row's length
        if full["input_ids"].shape[0] == 0:
            continue
        length = int(full["attention_mask"].sum(dim=1).max())
        assert cut["input_ids"].shape[1] == length and cut["position_ids"].shape[-1] == length
        for key, value in cut.items():
            expected = full[key][..., :length] if key == "position_ids" else full[key]
            expected = expected[:, :length] if key in TOKEN_KEYS else expected
            assert torch.equal(value, expected), key
    assert min(c["input_ids"].shape[1] for c in trimmed if c["input_ids"].shape[0]) < batch["input_ids"].shape[1]


def test_the_slicer_refuses_what_it_cannot_split_by_name(moe_model, rows):
    model, template = moe_model
    batch = collate(template, rows[:1])
    with pytest.raises(MoonInputError, match="'pixel_values_videos'"):
        split_rows({**batch, "pixel_values_videos": torch.zeros(4, 8)}, [4], image_token_id=151655)
    with pytest.raises(MoonInputError, match="'channel'"):
        split_rows({**batch, "channel": ["a"] * 4}, [4], image_token_id=151655)
    with pytest.raises(MoonInputError, match="image tokens"):
        split_rows({**batch, "image_grid_thw": batch["image_grid_thw"] * 2}, [4], image_token_id=151655)
    assert chunk_sizes(16, 4) == [4, 4, 4, 4] and chunk_sizes(10, 3) == [4, 3, 3]


@pytest.mark.parametrize("loss_kind", ["moon_infonce", "infonce"])
def test_cached_gradient_equals_the_uncached_one(moe_model, rows, loss_kind):
    model, template = moe_model
    model.train()
    batch = collate(template, rows)
    loss = make_loss(loss_kind, model)
    with swift_forward(template, model):
        expected_loss, expected = gradients(model, lambda inputs: model(**inputs), batch, loss)
        cached_loss, cached = gradients(model, lambda inputs: cached_forward(model, inputs, ROWS), batch, loss)
    assert cached_loss == pytest.approx(expected_loss, abs=1e-6)
    assert max_difference(expected, cached) <= TOLERANCE
    temperature = "temperature.logit_scale"
    assert (expected[temperature].abs() > 0).all() if loss_kind == "moon_infonce" else temperature not in expected


def test_cached_gradient_with_dropout_and_moe_aux_losses_equals_its_chunks_in_one_graph(models, rows):
    model, template = load(models["aux"])
    for module in model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.2  # the tiny model's attention dropout, on
    model.train()
    moe_layers = list(model.moe_layers().values())
    batch = collate(template, rows)
    loss = make_loss("moon_infonce", model)
    sizes = chunk_sizes(16, 4)
    reference = ChunkedReference(model, moe_layers, sizes)
    with swift_forward(template, model):
        _, other_seed = gradients(model, reference, batch, loss, seed=2)
        _, expected = gradients(model, reference, batch, loss)
        _, cached = gradients(model, lambda x: cached_forward(model, x, ROWS, moe_layers=moe_layers), batch, loss)
    assert max_difference(expected, other_seed) > 1e-3  # the masks matter: without restored RNG this fails
    assert max_difference(expected, cached) <= TOLERANCE
    assert all(moe.aux_grad_scale == 1.0 for moe in moe_layers)  # restored after the cached backward
    logged = [float(moe.last_aux_loss) for moe in moe_layers]  # what the MoE callback logs: the chunks' mean
    assert all(v > 0 for v in logged) and logged == pytest.approx(reference.aux, rel=1e-5)


def test_cached_gradient_with_reentrant_gradient_checkpointing(models, rows):
    model, template = load(models["no_aux"])
    model.train()
    batch = collate(template, rows)
    loss = make_loss("moon_infonce", model)
    calls = []
    model.model.language_model.layers[0].register_forward_hook(lambda *args: calls.append(1))
    with swift_forward(template, model):
        _, expected = gradients(model, lambda inputs: model(**inputs), batch, loss)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})  # as swift does
        calls.clear()
        _, cached = gradients(model, lambda inputs: cached_forward(model, inputs, ROWS), batch, loss)
    assert len(calls) == 3 * 4  # per chunk: first pass, second forward, its recomputation in backward
    assert max_difference(expected, cached) <= TOLERANCE


def test_cached_gradient_under_lora_with_lora_dropout(models, rows):
    from peft import LoraConfig, get_peft_model

    from moon_swift.integrations.swift.lora import train_moon_modules_in_full

    base, template = load(models["aux"])
    # random B (init_lora_weights=False): every LoRA weight gets a gradient, and dropout changes it
    config = LoraConfig(target_modules=["q_proj", "v_proj", "gate_proj"], r=4, lora_alpha=8, lora_dropout=0.2,
                        init_lora_weights=False)  # fmt: skip
    model = get_peft_model(base, config)
    train_moon_modules_in_full(model)  # routers and the learned temperature, as the trainer does
    model.train()
    moe_layers = [m for m in model.modules() if type(m).__name__ == "GuidedMoE"]
    batch = collate(template, rows)
    loss = make_loss("moon_infonce", model)
    sizes = chunk_sizes(16, 4)
    with swift_forward(template, model):
        _, expected = gradients(model, ChunkedReference(model, moe_layers, sizes), batch, loss)
        _, cached = gradients(model, lambda x: cached_forward(model, x, ROWS, moe_layers=moe_layers), batch, loss)
    assert any("lora_A" in name for name in cached) and any("temperature" in name for name in cached)
    assert max_difference(expected, cached) <= TOLERANCE


def test_the_option_is_read_from_the_environment_and_padding_free_is_refused_at_start(moe_model):
    from swift.template import get_template

    model, template = moe_model
    trainer = SimpleNamespace(template=template, moe_layers=())
    assert CachedSteps.for_trainer(trainer, env={}) is None
    assert CachedSteps.for_trainer(trainer, env={"MOON_GRAD_CACHE_ROWS": "0"}) is None
    assert CachedSteps.for_trainer(trainer, env={"MOON_GRAD_CACHE_ROWS": "16"}).rows_per_chunk == 16
    with pytest.raises(MoonInputError, match="MOON_GRAD_CACHE_ROWS='x': expected an integer"):
        CachedSteps.for_trainer(trainer, env={"MOON_GRAD_CACHE_ROWS": "x"})
    packed = get_template(template.processor, template_type="moon", padding_free=True)
    with pytest.raises(MoonInputError, match="MOON_GRAD_CACHE_ROWS=16 cannot be combined with --padding_free true"):
        CachedSteps.for_trainer(SimpleNamespace(template=packed), env={"MOON_GRAD_CACHE_ROWS": "16"})


class TwoPaths(torch.nn.Module):
    """Rows whose ``group_ids`` is 1 also go through ``extra``: a chunk of other rows never reaches it (as a
    chunk of text rows would not reach a vision tower that swift did not run on a dummy image)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body, self.extra = torch.nn.Linear(6, 6), torch.nn.Linear(6, 6)

    def forward(self, inputs_embeds, group_ids, **kwargs):
        out = self.body(inputs_embeds)
        use = (group_ids == 1).float()[:, None]
        if bool(use.any()):
            out = out + use * self.extra(inputs_embeds)
        return {"last_hidden_state": torch.nn.functional.normalize(out, dim=-1)}


def _contrastive(embeddings: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(embeddings @ embeddings.T / 0.1, dim=1).mean()


def _deepspeed_rank(rank: int, port: int, stage: int, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))  # fmt: skip
    import deepspeed
    from deepspeed.utils import safe_get_full_grad

    deepspeed.init_distributed(dist_backend="gloo")
    try:
        inputs = {
            "inputs_embeds": torch.randn(8, 6, generator=torch.Generator().manual_seed(rank)),
            "group_ids": torch.tensor([1] * 4 + [0] * 4),
        }  # the last of two chunks does not reach ``extra``
        reference = TwoPaths()  # each rank's own gradient, averaged as data parallel training does
        _contrastive(reference(**inputs)["last_hidden_state"]).backward()
        expected = {name: p.grad.clone() for name, p in reference.named_parameters()}
        for grad in expected.values():
            dist.all_reduce(grad)
            grad /= 2
        model = TwoPaths()
        config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
                  "zero_allow_untested_optimizer": True, "zero_optimization": {"stage": stage}}  # fmt: skip
        engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                                          config=config)  # fmt: skip
        engine.train()
        engine.backward(_contrastive(cached_forward(engine, inputs, 4)["last_hidden_state"]))
        got = {name: safe_get_full_grad(p).clone() for name, p in engine.module.named_parameters()}
        engine.step()
        if rank == 0:
            torch.save({name: float((expected[name] - got[name]).abs().max()) for name in expected}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("stage", [2, 3])
def test_under_deepspeed_a_parameter_the_last_chunk_does_not_reach_is_still_reduced(stage, tmp_path):
    # without the reduction after the last chunk, ZeRO-2 loses extra's gradient (max diff 0.08) and ZeRO-3 fails
    # in its zero_grad ("unknown parameter type": a gradient left on a partitioned parameter)
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_deepspeed_rank, args=(port, stage, str(tmp_path / "diff.pt")), nprocs=2)
    differences = torch.load(tmp_path / "diff.pt")
    assert max(differences.values()) <= TOLERANCE, differences
