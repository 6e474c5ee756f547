"""AdvAnchor (Zhao et al. 2024, arXiv 2501.00054): one step = anchor update (per strategy) + unlearning update."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..anchors import AnchorOptions, InnerResult, anchor_loss, follow, optimise_delta, share_from_rank_zero
from ..evaluate.attack import AttackOptions, adversarial_ids, adversarial_text, adversarial_tokens
from ..evaluate.inversion import PLACEHOLDER, condition, learn_word
from ..losses import alignment
from ..models import LoraOptions
from ..text import encode, perturbed_embeddings, token_positions, tokenize
from .base import ErasureMethod


@dataclass
class PromptOptions:
    """Prompt templates (the official ones by default); `{concept}` / `{attribute}` are filled in."""

    erase: str = "{concept} painting"  # c_e
    anchor: str = "{concept}'s painting"  # c_a, perturbed at the concept's tokens
    neutral: str = "painting"  # c_0, preserved
    attribute: str = "{attribute}'s painting"  # c_k
    # Words put in the erase and anchor templates' `{context}`, one erase prompt (and image set) per
    # context, all sharing the concept's delta: a style erased on the objects it is drawn on, as
    # UnlearnCanvas's "{object} in {style} style" prompts. None: one prompt per concept.
    contexts: list[str] | None = None

    def __post_init__(self) -> None:
        for name in ("erase", "anchor"):
            has = "{context}" in getattr(self, name)
            if has and not self.contexts:
                raise ValueError(
                    f"model.prompts.{name} holds {{context}} but model.prompts.contexts is empty; add some"
                )
            if self.contexts and not has:
                raise ValueError(f"model.prompts.contexts is set but model.prompts.{name} has no {{context}}; add it")

    def pairs(self, concept: str) -> list[tuple[str, str]]:
        """(c_e, c_a) of `concept`, one pair per context."""
        return [
            (self.erase.format(concept=concept, context=c), self.anchor.format(concept=concept, context=c))
            for c in self.contexts or [None]
        ]


@dataclass
class RobustOptions:
    """Training against an attack (AdvUnlearn, Zhang et al. 2024): every `every` steps the attack searches, on
    the current model, for what brings each erase prompt back (gcg, soft: k tokens before it; inversion: a
    learnt embedding of the concept word, `attack.inversion.steps` Adam steps on the concept image); the
    found prompt is then erased too."""

    every: int = 0  # optimiser steps between searches; 0: off, plain AdvAnchor
    weight: float = 1.0  # weight of the adversarial prompt's alignment to the anchor
    # The search: gcg, soft or inversion on the denoising objective of the concept image (no judge, no image).
    attack: AttackOptions = field(default_factory=lambda: AttackOptions(method="gcg", rounds=1))

    def __post_init__(self) -> None:
        if self.every < 0 or self.weight < 0:
            raise ValueError(f"model.robust.every and weight must be 0 or more, got {self.every} and {self.weight}")
        if self.every and self.attack.check().method not in ("gcg", "soft", "inversion"):
            raise ValueError(f"model.robust.attack.method must be gcg, soft or inversion, not {self.attack.method!r}")


@dataclass
class _ConceptText:
    """Constant text inputs of one erase prompt of a concept, on the UNet's device and in its dtype."""

    erase: torch.Tensor  # (1, L, D)
    neutral: torch.Tensor  # (1, L, D)
    attrs: torch.Tensor  # (K, L, D)
    weights: torch.Tensor  # (K,)
    anchor_ids: torch.Tensor  # (1, L)
    concept: int  # index of the concept, and of its delta


class AdvAnchor(ErasureMethod):
    """AdvAnchor: fine-tune the UNet so each concept's prediction matches the frozen model's
    prediction for its adversarial anchor, while the neutral prompt is held in place."""

    name = "advanchor"
    paper = (
        "Zhao et al. 2024, AdvAnchor: Enhancing Diffusion Model Unlearning with Adversarial Anchors, arXiv 2501.00054"
    )

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
        retain_weight: float = 0.0,
        ddim_steps: int = 50,
        paper_grad_accumulation: bool = False,
        robust: RobustOptions | None = None,
        mask: str = "none",
        mask_ratio: float = 0.5,
        retain: list[str] | None = None,
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
            retain_weight: weight of a retain set's preservation term (0: AdvAnchor's published form, off):
                each of `retain`'s prompts held to the frozen model's prediction at the concept image's
                z_t, as the retain sets of SalUn and MACE (DESIGN.md 3: the lever for a texture's
                damage to shapes).
            ddim_steps: timesteps are drawn from one of this many equal bins, as in the official code.
            paper_grad_accumulation: never zero gradients, as the published scripts do (off = clean).
            robust: training against an attack (off by default): the adversarial prompts found on the
                current model are aligned to the concept's anchor as well.
            mask, mask_ratio, retain: the weight-saliency mask and the retained prompts (`ErasureMethod`).
        """
        super().__init__(concepts, pretrained, trainable, lora, lr, ddim_steps, mask, mask_ratio, retain)
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
        if retain_weight < 0:
            raise ValueError(f"model.retain_weight must be 0 or more, got {retain_weight}")
        self.preservation_weight = preservation_weight
        self.retain_weight = retain_weight
        self.paper_grad_accumulation = paper_grad_accumulation
        self.robust = robust or RobustOptions()
        self.adversarial: dict[int, torch.Tensor] = {}  # erase item -> the latest adversarial tokens found, (k,)
        self._searched: dict[int, int] = {}  # erase item -> the step of its latest search
        self._text: dict[int, _ConceptText] = {}
        self._delta_opts: list[torch.optim.Optimizer] | None = None

    # --- anchors ------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """The concept's token positions in each of its anchor prompts (one per erase item), and one
        delta per concept."""
        self.items = [(i, *pair) for i, c in enumerate(self.concepts) for pair in self.prompts.pairs(c)]
        template = f"model.prompts.anchor {self.prompts.anchor!r}"
        self.positions = [
            token_positions(self.tokenizer, anchor, self.concepts[i], template) for i, _, anchor in self.items
        ]
        sizes: dict[int, int] = {}
        for (i, _, anchor), pos in zip(self.items, self.positions):
            if sizes.setdefault(i, len(pos)) != len(pos):
                raise ValueError(
                    f"{self.concepts[i]!r} occurs {len(pos)} times in anchor prompt {anchor!r}, not {sizes[i]} as in "
                    "its first; a context must not repeat the concept word"
                )
        dim = self.text_encoder.get_input_embeddings().embedding_dim
        self.deltas = nn.ParameterList(
            [nn.Parameter(self.anchor.init_scale * torch.randn(sizes[i], dim)) for i in range(len(self.concepts))]
        )
        # DDP must leave the anchors alone: their gradients come from autograd.grad in the inner loop, never
        # from the backward whose gradients DDP waits for, and `optimise_delta` averages them over ranks itself.
        names = [f"deltas.{i}" for i in range(len(self.deltas))]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, names)

    def summary(self) -> dict:
        norms = [float(d.detach().norm()) for d in self.deltas]
        robust = {"adversarial_prompts": self.adversarial_prompts()} if self.adversarial else {}
        return {**super().summary(), "strategy": self.anchor.strategy, "delta_norms": norms, **robust}

    def erase_prompts(self, concept: str) -> list[str]:
        return [erase for erase, _ in self.prompts.pairs(concept)]

    def erase_prompt(self, concept: str) -> str:
        """The first of the concept's erase prompts (the only one without contexts)."""
        return self.erase_prompts(concept)[0]

    def attribute_prompts(self, concept: str, erase: str | None = None) -> tuple[list[str], list[float]]:
        """c_k and w_k: with `use_concept`, the erase prompt c_e (`erase`, by default the concept's first)
        first (w_0 = 1, the official `ori_flag` term), then the attribute prompts."""
        attributes = self.attributes.get(concept, {})
        prompts = [self.prompts.attribute.format(attribute=w) for w in attributes]
        weights = list(attributes.values())
        if self.anchor.use_concept:
            return [erase or self.erase_prompt(concept), *prompts], [1.0, *weights]
        return prompts, weights

    @torch.no_grad()
    def _concept_text(self, item: int) -> _ConceptText:
        """The texts of erase item `item` (a data label), encoded once, and again whenever the UNet has
        moved to another device or dtype since."""
        device, dtype = self.unet.device, self.unet.dtype
        cached = self._text.get(item)
        if cached is not None and cached.erase.device == device and cached.erase.dtype == dtype:
            return cached
        index, erase, anchor = self.items[item]
        prompts, weights = self.attribute_prompts(self.concepts[index], erase)
        emb = encode(self.text_encoder, self.tokenizer, [erase, self.prompts.neutral, *prompts])
        emb = emb.to(device, dtype)
        self._text[item] = _ConceptText(
            erase=emb[:1],
            neutral=emb[1:2],
            attrs=emb[2:],
            weights=torch.tensor(weights, device=device, dtype=dtype),
            anchor_ids=tokenize(self.tokenizer, [anchor], self.text_encoder.device),
            concept=index,
        )
        return self._text[item]

    def anchor_embedding(self, item: int) -> torch.Tensor:
        """E(c_a; delta) for erase item `item`, differentiable in its concept's delta: (1, L, D)."""
        text = self._concept_text(item)
        with perturbed_embeddings(self.text_encoder, self.deltas[text.concept], self.positions[item]):
            return self.text_encoder(text.anchor_ids)[0].to(self.unet.dtype)

    # --- one unlearning step ----------------------------------------------------------------------

    def uses_retained(self) -> bool:
        return super().uses_retained() or self.retain_weight > 0

    @cached_property
    def _retain_prompts(self) -> tuple[str, ...]:
        """`retained_prompts()`, resolved once: the retain term reads them in both passes of every step."""
        return tuple(self.retained_prompts())

    def _retain_embeddings(self, text: _ConceptText) -> torch.Tensor:
        """E(c_r) of the retain set: (R, L, D), R = 0 when the retain term is off."""
        if self.retain_weight == 0:
            return text.neutral[:0]
        return self.encoded(*self._retain_prompts)

    def _frozen_references(
        self, zt: torch.Tensor, t: torch.Tensor, text: _ConceptText
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """eps*(z_t, c_0), eps*(z_t, c_k) for all k and eps*(z_t, c_r) for the retain set, in one frozen pass."""
        conds = torch.cat([text.neutral, text.attrs, self._retain_embeddings(text)])  # (1 + K + R, L, D)
        n, k = conds.shape[0], text.attrs.shape[0]
        with torch.no_grad(), self.frozen():
            ref = self.unet(zt.expand(n, -1, -1, -1), t.expand(n), conds).sample  # (1 + K + R, C, h, w)
        return ref[:1], ref[1 : 1 + k].unsqueeze(1), ref[1 + k :]  # (1, C, h, w), (K, 1, C, h, w), (R, C, h, w)

    def _optimise_anchor(
        self, item: int, zt: torch.Tensor, t: torch.Tensor, eps0: torch.Tensor, eps_attrs: torch.Tensor, steps: int
    ) -> InnerResult:
        """Up to `steps` delta updates on one image of erase item `item`, then eps*(z_t, E(c_a; delta)) for
        the final delta."""
        text = self._concept_text(item)

        def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
            eps_anchor = self.unet(zt, t, self.anchor_embedding(item)).sample
            loss = anchor_loss(self.anchor.loss, eps_anchor, eps_attrs, eps0, text.weights, self.anchor.use_concept)
            return loss, eps_anchor

        # The backward passes run inside the frozen view too: autograd reads the weights when it
        # differentiates, and outside the view they are the trained values, not the originals.
        with self.frozen(), torch.set_grad_enabled(steps > 0):
            return optimise_delta(
                self.deltas[text.concept],
                self._delta_optimizer(text.concept),
                evaluate,
                steps,
                self.paper_grad_accumulation,
                self.anchor.early_stop,
            )

    def _adversarial_prompt(self, item: int, z0: torch.Tensor) -> torch.Tensor | None:
        """E(c_adv) of erase item `item`, (1, L, D): its prompt behind the latest tokens the attack found, searched
        anew on the current model at every `robust.every`-th step; None while robust training is off.

        The found prompt shares the concept's anchor rather than getting its own: it is an attack on the same
        concept, whose anchor already says where the concept should go, and a second inner loop per search
        would double the anchor's cost for a prompt that changes every few steps."""
        if not self.robust.every:
            return None
        index, erase, _ = self.items[item]
        concept = self.concepts[index]
        inversion = self.robust.attack.method == "inversion"
        due = self.global_step % self.robust.every == 0 and self._searched.get(item) != self.global_step
        # An erase prompt first met between searches (one of several contexts or concepts) gets its own now.
        if due or item not in self.adversarial:
            # Its own generator: the search must not move the training's random stream, which resuming replays.
            seed = self.global_step * 1_000_003 + item
            if inversion:
                found = learn_word(
                    self.pipe, z0.unsqueeze(0), [0], [erase], concept, self.robust.attack.inversion, seed
                )
                self.adversarial[item] = found.embeddings  # (k, D)
            else:
                generator = torch.Generator().manual_seed(seed)
                self.adversarial[item] = adversarial_tokens(
                    self.pipe, erase, z0.unsqueeze(0), self.robust.attack, generator, concept=concept
                ).cpu()  # (k,)
            self._searched[item] = self.global_step
        with torch.no_grad():
            if inversion:
                return condition(self.pipe, erase, concept, self.adversarial[item]).to(self.unet.dtype)
            ids = adversarial_ids(self.tokenizer, erase, self.adversarial[item].unsqueeze(0))  # (1, L)
            ids = ids.to(self.text_encoder.device)
            return self.text_encoder(ids)[0].to(self.unet.dtype)

    def adversarial_prompts(self) -> dict[str, str]:
        """The latest adversarial prompt found for each erase prompt (robust training), as text; a learnt word
        is written <v*>."""
        out = {}
        for i, found in self.adversarial.items():
            index, erase, _ = self.items[i]
            inverted = self.robust.attack.method == "inversion"
            out[erase] = (
                erase.replace(self.concepts[index], PLACEHOLDER)
                if inverted
                else adversarial_text(self.tokenizer, erase, found)
            )
        return out

    def training_step(self, batch, batch_idx):
        latents, labels = batch
        opt_unet = self.optimizers()
        logs = {"alignment": 0.0, "preservation": 0.0, "anchor_loss": 0.0, "inner_steps": 0.0, "retain": 0.0}
        if self.robust.every:
            logs["robust"] = 0.0
        for z0, label in zip(latents, labels.tolist()):
            zt, t, _ = self.noised(z0.unsqueeze(0).to(self.unet.device, self.unet.dtype))  # (1, C, h, w)
            text = self._concept_text(label)
            eps0, eps_attrs, eps_retained = self._frozen_references(zt, t, text)
            # The sequential and cyclical strategies found delta before training: here it is only read.
            steps = self.anchor.max_inner_steps if self.anchor.strategy == "interleaved" else 0
            inner = self._optimise_anchor(label, zt, t, eps0, eps_attrs, steps)
            # One pass and one backward per term of the unlearning loss, not one batched pass: only one
            # prompt's activations are alive at a time, for the same summed gradient. The peak of an SD 1.4
            # step is this pass, so it sets the memory (docs/performance.md).
            align = alignment(self.unet(zt, t, text.erase).sample, inner.eps_anchor)
            self.manual_backward(align / len(latents))
            keep = alignment(self.unet(zt, t, text.neutral).sample, eps0)
            self.manual_backward(self.preservation_weight * keep / len(latents))
            held = torch.zeros((), device=keep.device)
            if self.retain_weight > 0:
                retained = self._retain_embeddings(text)  # (R, L, D)
                n = retained.shape[0]
                held = alignment(self.unet(zt.expand(n, -1, -1, -1), t.expand(n), retained).sample, eps_retained)
                self.manual_backward(self.retain_weight * held / len(latents))
            adversarial = self._adversarial_prompt(label, z0.to(self.unet.device, self.unet.dtype))
            if adversarial is not None:
                hidden = alignment(self.unet(zt, t, adversarial).sample, inner.eps_anchor)
                self.manual_backward(self.robust.weight * hidden / len(latents))
                logs["robust"] += hidden.item() / len(latents)
            for key, value in zip(logs, (align.item(), keep.item(), inner.loss, inner.steps, held.item())):
                logs[key] += value / len(latents)
        self.check_finite(logs)
        opt_unet.step()
        if not self.paper_grad_accumulation:
            opt_unet.zero_grad(set_to_none=True)
        logs["delta_norm"] = float(torch.stack([d.detach().norm() for d in self.deltas]).norm())
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=True, batch_size=len(latents))

    # --- anchor phases of the sequential and cyclical strategies ------------------------------------

    def on_train_start(self) -> None:
        super().on_train_start()  # the weight-saliency mask, ranked on the original weights
        share_from_rank_zero(self.deltas)
        # A resumed run's anchors come from its checkpoint, found by the pass that run made.
        if self.anchor.strategy == "interleaved" or self.trainer.ckpt_path is not None:
            return
        passes, steps = (1, self.anchor.max_inner_steps)
        if self.anchor.strategy == "cyclical":
            passes, steps = self.anchor.max_inner_steps, 1
        # Under DDP each rank passes over its own shard and `optimise_delta` averages delta's steps over
        # the ranks: together they make the one pass over the whole data the strategy asks for.
        loader = self.trainer.datamodule.anchor_dataloader()
        quiet = not self.trainer.is_global_zero  # one progress bar per run, not one per rank
        for _ in tqdm(range(passes), desc=f"{self.anchor.strategy} anchor passes", disable=passes == 1 or quiet):
            for z0, label in tqdm(loader, desc="anchor", leave=False, disable=quiet):
                label = int(label)
                zt, t, _ = self.noised(z0.to(self.unet.device, self.unet.dtype))
                eps0, eps_attrs, _ = self._frozen_references(zt, t, self._concept_text(label))
                self._optimise_anchor(label, zt, t, eps0, eps_attrs, steps)

    def _delta_optimizer(self, index: int) -> torch.optim.Optimizer:
        """Delta's Adam for the next concept image: a new one per image with `anchor.reset_optimizer` (the
        official scripts), else one per anchor kept across the run (delta is warm-started either way).
        They stay outside Lightning, whose manual optimisation counts every optimizer step as a global step."""
        delta = self.deltas[index]
        if self.anchor.reset_optimizer:
            return torch.optim.Adam([delta], lr=self.anchor.lr)
        if self._delta_opts is None:
            self._delta_opts = self._new_delta_opts()
        return follow(self._delta_opts[index], delta)

    def _new_delta_opts(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam([d], lr=self.anchor.lr) for d in self.deltas]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)  # the deltas are trained parameters: they are in its state_dict
        if self._delta_opts is not None:
            checkpoint["delta_optimizers"] = [opt.state_dict() for opt in self._delta_opts]
        checkpoint["adversarial"] = dict(self.adversarial)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.adversarial = dict(checkpoint.get("adversarial", {}))
        if "delta_optimizers" in checkpoint:
            self._delta_opts = self._new_delta_opts()
            for opt, state in zip(self._delta_opts, checkpoint["delta_optimizers"]):
                opt.load_state_dict(state)


# The name before the method interface: code that imported it keeps working.
Unlearner = AdvAnchor
