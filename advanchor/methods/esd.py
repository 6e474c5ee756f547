"""ESD, Erasing Concepts from Diffusion Models (Gandikota et al. 2023, arXiv 2303.07345): negative guidance."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from ..losses import alignment, esd_target
from .base import ErasureMethod


class ESD(ErasureMethod):
    """Fine-tune the UNet so that its prediction for the concept equals the frozen model's prediction
    guided away from it, on latents the model being edited samples itself (no image data).

    ESD-x trains attn2 (the default), ESD-u everything else (`trainable: non-attn2`).
    """

    name = "esd"
    paper = "Gandikota et al. 2023, Erasing Concepts from Diffusion Models, arXiv 2303.07345"
    trains_on = "none"

    def __init__(self, prompt: str = "{concept}", eta: float = 1.0, guidance_scale: float = 3.0, **kwargs):
        """
        Args:
            prompt: template of the concept's prompt c.
            eta: negative guidance scale of the target.
            guidance_scale: classifier-free guidance of the sampling that makes z_t (3 in the paper's code).
            **kwargs: as for every method (`ErasureMethod`); here `ddim_steps` is the number of DDIM steps
                of that sampling, which stops after a random number of them.
        """
        super().__init__(**kwargs)
        self.prompt, self.eta, self.guidance_scale = prompt, eta, guidance_scale

    def prepare(self) -> None:
        # A scheduler of its own: set_timesteps() must not change the pipeline's sampler.
        self.sampler = DDIMScheduler.from_config(self.noise_scheduler.config)

    def erase_prompt(self, concept: str) -> str:
        return self.prompt.format(concept=concept)

    @torch.no_grad()
    def partial_sample(self, uncond_cond: torch.Tensor, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """DDIM from pure noise, guided to the concept, stopped after `stop` of `ddim_steps` steps: z_t and t.

        t is the timestep whose noise level z_t has. The authors' script evaluates the models at a
        timestep drawn from the `stop`-th bin counted from t = 0 instead, which does not match it.
        """
        self.sampler.set_timesteps(self.ddim_steps, device=self.unet.device)
        size = self.unet.config.sample_size
        z = torch.randn(1, self.unet.config.in_channels, size, size, device=self.unet.device, dtype=self.unet.dtype)
        z = z * self.sampler.init_noise_sigma
        for t in self.sampler.timesteps[:stop]:
            eps_uncond, eps_cond = self.unet(z.expand(2, -1, -1, -1), t, uncond_cond).sample.chunk(2)
            z = self.sampler.step(eps_uncond + self.guidance_scale * (eps_cond - eps_uncond), t, z).prev_sample
        return z, self.sampler.timesteps[stop].reshape(1)

    def item_loss(self, z0: None, label: int) -> tuple[torch.Tensor, dict[str, float]]:
        uncond_cond = self.encoded("", self.erase_prompt(self.concepts[label]))  # (2, L, D)
        zt, t = self.partial_sample(uncond_cond, int(torch.randint(self.ddim_steps, ())))
        with torch.no_grad(), self.frozen():
            eps_uncond, eps_cond = self.unet(zt.expand(2, -1, -1, -1), t.expand(2), uncond_cond).sample.chunk(2)
        loss = alignment(self.unet(zt, t, uncond_cond[1:]).sample, esd_target(eps_uncond, eps_cond, self.eta))
        return loss, {"esd_loss": loss.item()}
