"""Fine-tuning unlearning (Ding et al. 2024, arXiv 2410.03833): train on the retained data only."""

from __future__ import annotations

import torch

from .base import ErasureMethod


class FineTune(ErasureMethod):
    """Fine-tune the UNet with the usual diffusion loss on images of the retained prompts, never showing
    it the concept. Alone it is expected to keep the concept (the paper's finding); with `mask: rbm` or
    `mask: salun` it is FT+RBM or FT+SalUn."""

    name = "ft"
    paper = "Ding et al. 2024, Understanding Fine-tuning in Approximate Unlearning, arXiv 2410.03833"
    trains_on = "retained"

    def __init__(self, prompt: str = "a {concept}", **kwargs):
        """
        Args:
            prompt: template of a concept's prompt: the erased concept's (SalUn's forgetting images) and,
                by default on the toy world, each retained concept's.
            **kwargs: as for every method (`ErasureMethod`); `retain` lists the retained prompts.
        """
        super().__init__(**kwargs)
        self.prompt = prompt

    def prepare(self) -> None:
        # Once, not per step: the list is fixed, and a missing one is an error at attach time.
        self.retained = self.retained_prompts()

    def erase_prompt(self, concept: str) -> str:
        return self.prompt.format(concept=concept)

    def item_loss(self, z0: torch.Tensor, label: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self.denoising_loss(z0, self.retained[label])
        return loss, {"denoising": loss.item()}
