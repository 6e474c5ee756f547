"""The unlearning LightningModule: one step = anchor update (per strategy) + unlearning update."""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch import nn
from tqdm.auto import tqdm

from .anchors import AnchorOptions, InnerResult, anchor_loss, optimise_delta
from .losses import unlearning_loss
from .models import TRAINABLE_SETS, FrozenView, LoraOptions, add_lora, load_pipeline, trainable_parameters
from .text import encode, perturbed_embeddings, token_positions, tokenize, word_ids


@dataclass
class PromptOptions:
    """Prompt templates (the official ones by default); `{concept}` / `{attribute}` are filled in."""

    erase: str = "{concept} painting"  # c_e
    anchor: str = "{concept}'s painting"  # c_a, perturbed at the concept's tokens
    neutral: str = "painting"  # c_0, preserved
    attribute: str = "{attribute}'s painting"  # c_k


@dataclass
class _ConceptText:
    """Constant text inputs of one concept, on the module's device."""

    erase: torch.Tensor  # (1, L, D)
    neutral: torch.Tensor  # (1, L, D)
    attrs: torch.Tensor  # (K, L, D)
    weights: torch.Tensor  # (K,)
    anchor_ids: torch.Tensor  # (1, L)


class Unlearner(pl.LightningModule):
    """AdvAnchor: fine-tune the UNet so each concept's prediction matches the frozen model's
    prediction for its adversarial anchor, while the neutral prompt is held in place."""

    def __init__(
        self,
        concepts: list[str] | None = None,
        pretrained: str = "toy",
        trainable: str = "attn2",
        lora: LoraOptions | None = None,
        prompts: PromptOptions | None = None,
        anchor: AnchorOptions | None = None,
        attributes: dict[str, dict[str, float]] | None = None,
        lr: float = 1e-5,
        preservation_weight: float = 10.0,
        ddim_steps: int = 50,
        paper_grad_accumulation: bool = False,
    ):
        """
        Args:
            concepts: words to erase, each with its own anchor (e.g. ["van gogh"], ["circle"]).
            pretrained: "toy" (the shipped toy model), a local diffusers directory or a cached hub id.
            trainable: attn2 (= ESD-x), attn2-kv, non-attn2 (= ESD-u), all, or lora.
            lora: adapter settings when trainable is "lora".
            prompts: templates of the erase, anchor, neutral and attribute prompts.
            anchor: loss, strategy and optimiser of the adversarial anchor.
            attributes: per concept, attribute word -> weight w_k (e.g. nudity's body parts).
            lr: learning rate of the UNet parameters.
            preservation_weight: lambda, weight of the neutral prompt's preservation term.
            ddim_steps: timesteps are drawn from one of this many equal bins, as in the official code.
            paper_grad_accumulation: never zero gradients, as the published scripts do (off = clean).
        """
        super().__init__()
        self.automatic_optimization = False
        self.concepts = list(concepts or ["circle"])
        if trainable not in TRAINABLE_SETS:
            raise ValueError(f"unknown trainable set {trainable!r}; use one of: {', '.join(TRAINABLE_SETS)}")
        self.pretrained, self.trainable = pretrained, trainable
        self.lora_options = lora or LoraOptions()
        self.prompts = prompts or PromptOptions()
        self.anchor = anchor or AnchorOptions()
        self.attributes = attributes or {}
        unknown = set(self.attributes) - set(self.concepts)
        if unknown:
            raise ValueError(
                f"attributes are given for {sorted(unknown)}, which are not among concepts {self.concepts}"
            )
        if not self.anchor.use_concept and not all(self.attributes.get(c) for c in self.concepts):
            raise ValueError("with anchor.use_concept false every concept needs attributes; give some or turn it on")
        self.lr, self.preservation_weight, self.ddim_steps = lr, preservation_weight, ddim_steps
        self.paper_grad_accumulation = paper_grad_accumulation
        self._pipe = None
        self._text: dict[int, _ConceptText] = {}
        self._delta_opts: list[torch.optim.Optimizer] | None = None

    # --- model assembly -------------------------------------------------------------------------

    @property
    def pipe(self):
        """The pipeline being edited; loaded on first use unless one was attached."""
        if self._pipe is None:
            self.attach(load_pipeline(self.pretrained))
        return self._pipe

    def attach(self, pipe) -> Unlearner:
        """Edit `pipe` in place: add adapters or unfreeze the chosen set, and create the anchors."""
        if self._pipe is not None:
            raise RuntimeError("a pipeline is already attached to this Unlearner")
        self._pipe = pipe
        self.unet, self.text_encoder, self.tokenizer = pipe.unet, pipe.text_encoder, pipe.tokenizer
        self.noise_scheduler = pipe.scheduler
        self.unet.requires_grad_(False)
        self.text_encoder.requires_grad_(False)
        if self.trainable == "lora":
            self.trained = add_lora(self.unet, self.lora_options)
        else:
            self.trained = trainable_parameters(self.unet, self.trainable)
            for p in self.trained.values():
                p.requires_grad_(True)
        self.frozen = FrozenView(self.unet, self.trained, lora=self.trainable == "lora")
        self.positions = []
        for concept in self.concepts:
            word_ids(self.tokenizer, concept)
            self.positions.append(token_positions(self.tokenizer, self.anchor_prompt(concept), concept))
        dim = self.text_encoder.get_input_embeddings().embedding_dim
        self.deltas = nn.ParameterList(
            [nn.Parameter(self.anchor.init_scale * torch.randn(len(pos), dim)) for pos in self.positions]
        )
        return self

    def erase_prompt(self, concept: str) -> str:
        return self.prompts.erase.format(concept=concept)

    def anchor_prompt(self, concept: str) -> str:
        return self.prompts.anchor.format(concept=concept)

    def attribute_prompts(self, concept: str) -> tuple[list[str], list[float]]:
        """c_k and w_k: the concept itself first (w_0 = 1, when used), then its attributes."""
        words = ([concept] if self.anchor.use_concept else []) + list(self.attributes.get(concept, {}))
        weights = ([1.0] if self.anchor.use_concept else []) + list(self.attributes.get(concept, {}).values())
        return [self.prompts.attribute.format(attribute=w) for w in words], weights

    @torch.no_grad()
    def _concept_text(self, index: int) -> _ConceptText:
        cached = self._text.get(index)
        if cached is not None and cached.erase.device == self.device:
            return cached
        concept = self.concepts[index]
        prompts, weights = self.attribute_prompts(concept)
        emb = encode(self.text_encoder, self.tokenizer, [self.erase_prompt(concept), self.prompts.neutral, *prompts])
        self._text[index] = _ConceptText(
            erase=emb[:1],
            neutral=emb[1:2],
            attrs=emb[2:],
            weights=torch.tensor(weights, device=self.device),
            anchor_ids=tokenize(self.tokenizer, [self.anchor_prompt(concept)], self.device),
        )
        return self._text[index]

    def anchor_embedding(self, index: int) -> torch.Tensor:
        """E(c_a; delta) for concept `index`, differentiable in its delta: (1, L, D)."""
        ids = self._concept_text(index).anchor_ids
        with perturbed_embeddings(self.text_encoder, self.deltas[index], self.positions[index]):
            return self.text_encoder(ids)[0]

    # --- one unlearning step ----------------------------------------------------------------------

    def _sample_timestep(self) -> torch.Tensor:
        """A DDIM bin i ~ U{0..n-1}, then t ~ U[T i/n, T (i+1)/n), as the official scripts draw it."""
        total = self.noise_scheduler.config.num_train_timesteps
        i = int(torch.randint(self.ddim_steps, ()))
        lo, hi = total * i // self.ddim_steps, max(total * (i + 1) // self.ddim_steps, total * i // self.ddim_steps + 1)
        return torch.randint(lo, hi, (1,), device=self.device)

    def _frozen_references(
        self, zt: torch.Tensor, t: torch.Tensor, text: _ConceptText
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """eps*(z_t, c_0) and eps*(z_t, c_k) for all k in one batched frozen pass."""
        conds = torch.cat([text.neutral, text.attrs])  # (1 + K, L, D)
        n = conds.shape[0]
        with torch.no_grad(), self.frozen():
            ref = self.unet(zt.expand(n, -1, -1, -1), t.expand(n), conds).sample  # (1 + K, C, h, w)
        return ref[:1], ref[1:].unsqueeze(1)  # (1, C, h, w), (K, 1, C, h, w)

    def _anchor_closure(
        self, index: int, zt: torch.Tensor, t: torch.Tensor, eps0: torch.Tensor, eps_attrs: torch.Tensor
    ):
        text = self._concept_text(index)

        def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
            with self.frozen():
                eps_anchor = self.unet(zt, t, self.anchor_embedding(index)).sample
            loss = anchor_loss(self.anchor.loss, eps_anchor, eps_attrs, eps0, text.weights, self.anchor.use_concept)
            return loss, eps_anchor

        return evaluate

    def _noised(self, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self._sample_timestep()
        return self.noise_scheduler.add_noise(z0, torch.randn_like(z0), t), t

    def training_step(self, batch, batch_idx):
        latents, labels = batch
        opt_unet = self.optimizers()
        opt_deltas = self.delta_optimizers()
        logs = {"alignment": 0.0, "preservation": 0.0, "anchor_loss": 0.0, "inner_steps": 0.0}
        for z0, label in zip(latents, labels.tolist()):
            zt, t = self._noised(z0.unsqueeze(0).to(self.dtype))  # (1, C, h, w)
            text = self._concept_text(label)
            eps0, eps_attrs = self._frozen_references(zt, t, text)
            evaluate = self._anchor_closure(label, zt, t, eps0, eps_attrs)
            if self.anchor.strategy == "interleaved":
                inner = optimise_delta(
                    self.deltas[label],
                    opt_deltas[label],
                    evaluate,
                    self.anchor.max_inner_steps,
                    self.paper_grad_accumulation,
                )
            else:
                with torch.no_grad():
                    loss, eps = evaluate()
                inner = InnerResult(0, loss.item(), eps)
            pred = self.unet(zt.expand(2, -1, -1, -1), t.expand(2), torch.cat([text.erase, text.neutral])).sample
            loss, align, keep = unlearning_loss(pred[:1], inner.eps_anchor, pred[1:], eps0, self.preservation_weight)
            self.manual_backward(loss / len(latents))
            for key, value in zip(logs, (align.item(), keep.item(), inner.loss, inner.steps)):
                logs[key] += value / len(latents)
        opt_unet.step()
        if not self.paper_grad_accumulation:
            opt_unet.zero_grad(set_to_none=True)
        logs["delta_norm"] = float(torch.stack([d.detach().norm() for d in self.deltas]).norm())
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=True, batch_size=len(latents))

    # --- anchor phases of the sequential and cyclical strategies ------------------------------------

    def on_train_start(self) -> None:
        if self.anchor.strategy == "interleaved":
            return
        passes, steps = (1, self.anchor.max_inner_steps)
        if self.anchor.strategy == "cyclical":
            passes, steps = self.anchor.max_inner_steps, 1
        opt_deltas = self.delta_optimizers()
        loader = self.trainer.datamodule.anchor_dataloader()
        for _ in tqdm(range(passes), desc=f"{self.anchor.strategy} anchor passes", disable=passes == 1):
            for z0, label in tqdm(loader, desc="anchor", leave=False):
                label = int(label)
                zt, t = self._noised(z0.to(self.device, self.dtype))
                eps0, eps_attrs = self._frozen_references(zt, t, self._concept_text(label))
                evaluate = self._anchor_closure(label, zt, t, eps0, eps_attrs)
                optimise_delta(self.deltas[label], opt_deltas[label], evaluate, steps, self.paper_grad_accumulation)

    def delta_optimizers(self) -> list[torch.optim.Optimizer]:
        """One Adam per anchor, kept across steps (delta is warm-started). They stay outside
        Lightning, whose manual optimisation counts every optimizer step as a global step."""
        if self._delta_opts is None:
            self._delta_opts = [torch.optim.Adam([d], lr=self.anchor.lr) for d in self.deltas]
        return self._delta_opts

    def configure_optimizers(self):
        return torch.optim.Adam(self.trained.values(), lr=self.lr)
