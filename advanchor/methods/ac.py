"""Ablating Concepts, model-based (Kumari et al. 2023, arXiv 2303.13516): map the concept to an anchor prompt."""

from __future__ import annotations

import torch

from ..losses import alignment
from ..models import LoraOptions
from .base import ErasureMethod


class AblatingConcepts(ErasureMethod):
    """Fine-tune the UNet so that, on noised images of the concept, its prediction for the concept's
    prompt matches the frozen model's prediction for a fixed anchor prompt. AdvAnchor is this method
    with the anchor made adversarial."""

    name = "ac"
    paper = "Kumari et al. 2023, Ablating Concepts in Text-to-Image Diffusion Models, arXiv 2303.13516"

    def __init__(
        self,
        concepts: list[str] | None = None,
        pretrained: str = "toy",
        trainable: str = "attn2-kv",
        lora: LoraOptions | None = None,
        lr: float = 2e-6,
        ddim_steps: int = 50,
        erase: str = "{concept} painting",
        anchor: str = "painting",
        mask: str = "none",
        mask_ratio: float = 0.5,
        retain: list[str] | None = None,
    ):
        """
        Args:
            concepts, pretrained, trainable, lora, lr, ddim_steps: as for every method (`ErasureMethod`);
                the paper's cross-attention variant trains `to_k`/`to_v` (attn2-kv).
            erase: template of the concept's prompt c*, whose images are generated and noised.
            anchor: template of the anchor prompt c (a superclass, or "painting" for a style).
            mask, mask_ratio, retain: the weight-saliency mask and the retained prompts (`ErasureMethod`).
        """
        super().__init__(concepts, pretrained, trainable, lora, lr, ddim_steps, mask, mask_ratio, retain)
        self.erase, self.anchor = erase, anchor

    def erase_prompt(self, concept: str) -> str:
        return self.erase.format(concept=concept)

    def item_loss(self, z0: torch.Tensor, label: int) -> tuple[torch.Tensor, dict[str, float]]:
        concept = self.concepts[label]
        zt, t, _ = self.noised(z0.unsqueeze(0).to(self.unet.device, self.unet.dtype))  # (1, C, h, w)
        erase, anchor = self.encoded(self.erase_prompt(concept), self.anchor.format(concept=concept)).chunk(2)
        with torch.no_grad(), self.frozen():
            target = self.unet(zt, t, anchor).sample
        loss = alignment(self.unet(zt, t, erase).sample, target)
        return loss, {"alignment": loss.item()}
