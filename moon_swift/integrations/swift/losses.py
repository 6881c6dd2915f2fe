"""``--loss_type moon_infonce`` as swift builds it: the loss with its options from ``MOON_INFONCE_*``."""

from __future__ import annotations

from ...losses.moon_infonce import MoonInfoNCELoss
from .environment import infonce_options


class SwiftMoonInfoNCELoss(MoonInfoNCELoss):
    """What swift's ``loss_map`` holds for ``moon_infonce`` (swift calls ``loss_cls(args, trainer)``)."""

    def __init__(self, args, trainer):
        super().__init__(args, trainer, options=infonce_options())
