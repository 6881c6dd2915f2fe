"""Under LoRA, MOON's own small modules (MoE routers, the learned temperature) train in full.

They do not exist in the base checkpoint: routers start at a random upcycle initialisation, the temperature at
its initial value. Left frozen under ``--tuner_type lora`` (the usual ``target_modules`` name attention and FFN
projections), routing would never learn and the aux loss would only reach upstream adapters. They are tiny
(``hidden x num_experts`` per MoE layer, one scalar), so they go into peft's ``modules_to_save``: trained,
saved in the adapter and restored with it. A router the user made a LoRA target is left as it is.

The trained copies are float32, as peft keeps LoRA weights: a bf16 model trained without DeepSpeed's float32
master weights (the LoRA recipe) would lose updates below bf16's resolution (the temperature's log, ~3.0,
moves in steps of 0.016; lr 1e-4 steps never land).
"""

from __future__ import annotations

import logging

from torch import nn

from ...modeling.guided_moe import GuidedMoE
from ...modeling.modeling_moon import LearnedTemperature

logger = logging.getLogger("moon_swift")


def _owners(model: nn.Module) -> dict[str, list[nn.Module]]:
    """suffix -> the modules it would wrap (routers: each GuidedMoE's ``router``)."""
    found: dict[str, list[nn.Module]] = {"router": [], "temperature": []}
    for module in model.modules():
        if isinstance(module, GuidedMoE):
            found["router"].append(module.router)
        elif isinstance(module, LearnedTemperature):
            found["temperature"].append(module)
    return found


def train_moon_modules_in_full(model: nn.Module) -> list[str]:
    """Add the routers and the learned temperature to a peft model's ``modules_to_save``; returns the names added."""
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import ModulesToSaveWrapper, set_additional_trainable_modules

    if not isinstance(model, PeftModel):
        return []
    adapter = model.active_adapter
    config = model.peft_config[adapter]
    if not hasattr(config, "modules_to_save"):
        return []
    present = list(config.modules_to_save or [])
    added = []
    owners = _owners(model)
    for name, modules in owners.items():
        if not modules or name in present:
            continue
        if any(isinstance(module, (BaseTunerLayer, ModulesToSaveWrapper)) for module in modules):
            continue  # already a LoRA target (or wrapped): trained as the user asked
        added.append(name)
    if added:
        config.modules_to_save = present + added
        set_additional_trainable_modules(model, config, getattr(model, "config", None), adapter)
        ours = {id(module) for name in added for module in owners[name]}
        for module in model.modules():
            if isinstance(module, ModulesToSaveWrapper) and id(module.original_module) in ours:
                module.modules_to_save[adapter].float()
        logger.info("moon: trained in full under LoRA (peft modules_to_save, float32): %s", added)
    return added
