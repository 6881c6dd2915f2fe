"""Routers and the learned temperature under peft LoRA: trained in full, in float32, in a bf16 model."""

import torch
from peft import LoraConfig, get_peft_model

from moon_swift.apps.tiny_model import TinySpec, build_config
from moon_swift.integrations.swift.lora import train_moon_modules_in_full
from moon_swift.modeling import MoonModel


def test_routers_and_temperature_train_in_full_in_float32_inside_a_bf16_model():
    config = build_config(TinySpec(extra_config={"moe_layers": "all", "learnable_temperature": True}))
    model = get_peft_model(MoonModel(config).to(torch.bfloat16), LoraConfig(target_modules=["q_proj", "gate_proj"]))
    assert train_moon_modules_in_full(model) == ["router", "temperature"]
    assert train_moon_modules_in_full(model) == []  # once
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad and "modules_to_save" in n}
    assert len(trained) == 3 and all(p.dtype == torch.float32 for p in trained.values())  # 2 routers + temperature
    out = model(input_ids=torch.tensor([[5, 6, 7, 8]]), token_type_ids=torch.tensor([[0, 1, 2, 0]]))
    assert out.last_hidden_state.dtype == torch.float32 and out.logit_scale.dtype == torch.float32
    (out.last_hidden_state.sum() + out.logit_scale).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.values())
