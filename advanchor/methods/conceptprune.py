"""ConceptPrune (Chavhan et al. 2024, arXiv 2405.19237): zero the feed-forward weights that the concept
alone relies on, found by Wanda scores over a sampling run; no training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .. import export
from .base import ErasureMethod

CHUNK = 16  # images per recorded sampling call


def skilled_weights(
    weight: torch.Tensor, concept_norms: torch.Tensor, base_norms: torch.Tensor, skill_ratio: float
) -> torch.Tensor:
    """ConceptPrune's skilled neurons of one layer at one timestep (Chavhan et al. 2024, Sec. 3.2; the
    authors' wanda/wanda.py): Wanda scores S = |W| * ||X_j||_2 for the concept's and the base prompts'
    inputs; in every output row the top `skill_ratio` of the columns by concept score, kept where the
    concept score beats the base score. weight: (out, in); norms: (in,). Returns a bool mask (out, in).
    """
    concept = weight.abs() * concept_norms  # (out, in)
    stronger = concept > weight.abs() * base_norms
    count = int(skill_ratio * weight.shape[1])
    top = torch.zeros_like(stronger)
    top.scatter_(1, concept.topk(count, dim=1).indices, True)
    return top & stronger


class ConceptPrune(ErasureMethod):
    """Record the inputs of every feed-forward output projection (`ff.net.2`) over a sampling run of the
    concept's prompt and of the base prompts, mark each timestep's skilled weights, and zero the union
    over the first `tau` timesteps."""

    name = "conceptprune"
    paper = (
        "Chavhan et al. 2024, ConceptPrune: Concept Editing in Diffusion Models via Skilled Neuron Pruning, "
        "arXiv 2405.19237"
    )
    trains_on = "none"
    trains = False

    def __init__(
        self,
        prompt: str = "{concept}",
        skill_ratio: float = 0.01,
        tau: int = 10,
        base: list[str] | None = None,
        samples: int = 4,
        steps: int = 50,
        guidance_scale: float = 7.5,
        trainable: str = "ff-out",
        **kwargs,
    ):
        """
        Args:
            prompt: template of the concept's prompt.
            skill_ratio: share of each output row's input weights that can be marked (0.01; 0.02 for objects).
            tau: the first this many sampling steps (the noisiest) whose marks are pruned, as a union.
            base: prompts without the concept; default on the toy model its retained prompts.
            samples: seeds per prompt in the recorded sampling runs.
            steps, guidance_scale: of the recorded sampling runs (DDIM as the pipeline's scheduler).
            trainable: the edited set, ff-out (the only one ConceptPrune prunes).
            **kwargs: as for every method (`ErasureMethod`).
        """
        super().__init__(trainable=trainable, **kwargs)
        if self.trainable != "ff-out":
            raise ValueError(f"conceptprune prunes the ff.net.2 weights; set trainable to ff-out, not {self.trainable}")
        if not 0.0 < skill_ratio < 1.0:
            raise ValueError(f"skill_ratio must be in (0, 1), got {skill_ratio}")
        if not 1 <= tau <= steps:
            raise ValueError(f"tau must be between 1 and steps ({steps}), got {tau}")
        self.skill_ratio, self.tau, self.base = skill_ratio, tau, None if base is None else list(base)
        self.samples, self.steps, self.guidance_scale, self.prompt = samples, steps, guidance_scale, prompt
        self.pruned: dict[str, int] = {}

    def erase_prompt(self, concept: str) -> str:
        return self.prompt.format(concept=concept)

    @contextmanager
    def recorded_inputs(self) -> Iterator[dict[str, list[torch.Tensor]]]:
        """While active: per trained weight, one (in,) sum of squared inputs per UNet call, with the count
        of input rows in `counts` (the key "")."""
        modules = {f"{name}.weight": m for name, m in self.unet.named_modules() if f"{name}.weight" in self.trained}
        sums: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
        sums[""] = []

        def step(module, args):
            for values in sums.values():
                values.append(None)

        def record(name):
            def hook(module, args):
                x = args[0].detach().float().flatten(0, -2)  # (B, N, in) -> (B * N, in)
                # Unit rows, as the authors' receiver: no token's activation scale dominates the column norms.
                x = torch.nn.functional.normalize(x, dim=1)
                sums[name][-1] = x.square().sum(0)
                sums[""][-1] = torch.tensor(float(x.shape[0]))

            return hook

        handles = [self.unet.register_forward_pre_hook(step)]
        handles += [m.register_forward_pre_hook(record(name)) for name, m in modules.items()]
        try:
            yield sums
        finally:
            for handle in handles:
                handle.remove()

    @torch.no_grad()
    def _input_norms(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Per trained weight: the column norms of the unit-normalised inputs at each of the first `tau`
        steps, over every prompt and seed, divided by sqrt(rows): the authors' norms up to one factor,
        which lets prompt sets of different sizes compare (theirs pair prompts one to one): (tau, in)."""
        totals: dict[str, torch.Tensor] = {}
        rows = torch.zeros(self.tau)
        self.pipe.set_progress_bar_config(disable=True)
        items = [(prompt, seed) for prompt in prompts for seed in range(self.samples)]
        for i in range(0, len(items), CHUNK):
            chunk = items[i : i + CHUNK]
            with self.recorded_inputs() as sums:
                self.pipe(
                    [prompt for prompt, _ in chunk],
                    generator=[torch.Generator().manual_seed(seed) for _, seed in chunk],
                    guidance_scale=self.guidance_scale,
                    num_inference_steps=self.steps,
                    output_type="latent",
                )
            for name, values in sums.items():
                if name:
                    total = torch.stack(values[: self.tau])  # (tau, in)
                    totals[name] = totals[name] + total if name in totals else total
            rows += torch.stack(sums[""][: self.tau])
        return {name: (total / rows[:, None]).sqrt() for name, total in totals.items()}

    def base_prompts(self) -> list[str]:
        """`base`, or on the toy model the retained prompts (every other toy concept)."""
        return self.base if self.base is not None else self.retained_prompts()

    @torch.no_grad()
    def edit(self) -> None:
        """Record, select, and zero the union of each layer's skilled weights over the first `tau` steps."""
        concept = self._input_norms([self.erase_prompt(c) for c in self.concepts])
        base = self._input_norms(self.base_prompts())
        for name, param in self.trained.items():
            weight = param.float()
            marked = torch.zeros_like(weight, dtype=torch.bool)
            for step in range(self.tau):
                marked |= skilled_weights(weight, concept[name][step], base[name][step], self.skill_ratio)
            param[marked] = 0
            self.pruned[name] = int(marked.sum())

    def summary(self) -> dict:
        sizes = {name: p.numel() for name, p in self.trained.items()}
        pruned = sum(self.pruned.values())
        return {
            **super().summary(),
            "pruned_weights": pruned,
            "sparsity_ff_out": pruned / sum(sizes.values()),
            "sparsity_unet": pruned / sum(p.numel() for p in self.unet.parameters()),
            "sparsity_per_layer": {name: self.pruned[name] / sizes[name] for name in self.pruned},
        }

    def export(self, directory, kohya: bool = False) -> None:
        """The pruning as a sparse `unet_delta.safetensors` (indices and values of the zeroed weights)."""
        export.save_sparse_delta(self.unet, self.frozen.originals, directory / export.DELTA_FILE)
