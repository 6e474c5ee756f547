"""Cost of one AdvAnchor iteration, ours against the compute pattern of the published scripts.

Both modes run the same algorithm on the same draws (delta's start, z_0, t, the noise), with the
interleaved strategy, a new Adam for delta per image, and exactly `--inner-steps` delta updates per
iteration (no early stop), so they do the same work:

- `ours`: `AdvAnchor.training_step` under a Lightning Trainer. One UNet; the original model is the same
  UNet with the trained parameters swapped back; eps*(c_0) and eps*(c_e) are computed once per image in
  one batched pass; the last inner pass, eps*(c_a; delta) for the final delta, is the unlearning target;
  the two trained passes run one after the other, each with its own backward.
- `reference`: the published scripts' pattern (AdvAnchor's train-scripts): two full UNet copies, and at
  every inner step three separate frozen passes (the anchor; the neutral prompt, whose result is unused;
  the concept's, recomputed although it does not change), then the anchor and the neutral prompt once
  more for the unlearning step, and the two trained passes one after the other. The frozen copy takes no
  weight gradients here (the scripts leave its parameters trainable, which costs them more still).

Each mode runs in its own process, so that peak memory is its own; memory is the peak resident set size
above the process's size once its libraries are imported (the CPU counterpart of
`torch.cuda.max_memory_allocated`), and the absolute peaks are reported too.

    python benchmarks/step_cost.py --json outputs/step_cost.json

By default on the SD 1.4 stand-in at 32x32 latents (written to outputs/standin-sd14 when absent by
`python -m advanchor.standin`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "outputs" / "standin-sd14"
MODES = ("ours", "reference")


def rss_mb() -> float:
    """This process's resident set size now, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status; this benchmark needs Linux")


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_parts(model: str) -> SimpleNamespace:
    """The UNet, text encoder, tokenizer and noise scheduler of a diffusers pipeline folder (no VAE)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    from advanchor.models import resolve_path

    path = resolve_path(model)
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet").eval().requires_grad_(False)
    text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder").eval().requires_grad_(False)
    return SimpleNamespace(
        unet=unet,
        text_encoder=text_encoder,
        tokenizer=AutoTokenizer.from_pretrained(path, subfolder="tokenizer"),
        scheduler=DDPMScheduler.from_pretrained(path, subfolder="scheduler"),
    )


class PassCounter:
    """UNet calls, the samples they evaluate, and the samples that a backward pass goes through."""

    def __init__(self, *unets: torch.nn.Module):
        self.calls = self.samples = self.backward = 0
        for unet in unets:
            unet.register_forward_hook(self._forward)

    def _forward(self, module, args, output) -> None:
        self.calls += 1
        self.samples += args[0].shape[0]
        if output.sample.requires_grad:
            output.sample.register_hook(self._backward)

    def _backward(self, grad: torch.Tensor) -> None:
        self.backward += grad.shape[0]

    def snapshot(self) -> tuple[int, int, int]:
        return self.calls, self.samples, self.backward


MODEL_LR, ANCHOR_LR, PRESERVATION, DDIM_STEPS = 1e-5, 1e-4, 10.0, 50  # configs/sd14/style.yaml


def method(args, parts) -> torch.nn.Module:
    """Our AdvAnchor with the SD 1.4 style settings, `--inner-steps` updates of delta per image."""
    from advanchor.anchors import AnchorOptions
    from advanchor.methods import AdvAnchor

    anchor = AnchorOptions(
        loss="adv1", lr=ANCHOR_LR, max_inner_steps=args.inner_steps, reset_optimizer=True, early_stop=False
    )
    torch.manual_seed(args.seed)
    module = AdvAnchor(
        concepts=[args.concept],
        pretrained=args.model,
        anchor=anchor,
        lr=MODEL_LR,
        preservation_weight=PRESERVATION,
        ddim_steps=DDIM_STEPS,
    )
    return module.attach(parts)


def latents(args, parts) -> torch.Tensor:
    g = torch.Generator().manual_seed(args.seed)
    channels = parts.unet.config.in_channels
    return torch.randn(args.iterations, 1, channels, args.latent, args.latent, generator=g)  # (N, 1, C, h, w)


def run_ours(args, parts, counter_box: list) -> list[dict]:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    module = method(args, parts)
    counter = PassCounter(parts.unet)
    counter_box.append(counter)
    records: list[dict] = []

    class Recorder(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            torch.manual_seed(args.seed + 1)  # the draws of t and the noise, as in `run_reference`

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.start, self.passes = time.perf_counter(), counter.snapshot()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seconds = time.perf_counter() - self.start
            figures = {k.removeprefix("train/"): float(v) for k, v in trainer.callback_metrics.items()}
            records.append(iteration_record(seconds, counter, self.passes, figures, pl_module.deltas[0]))

    z0 = latents(args, parts)[:, 0]  # (N, C, h, w)
    data = DataLoader(TensorDataset(z0, torch.zeros(len(z0), dtype=torch.long)), batch_size=1)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=args.iterations,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Recorder()],
    )
    trainer.fit(module, train_dataloaders=data)
    return records


def iteration_record(seconds, counter, before, figures, delta) -> dict:
    calls, samples, backward = (now - then for now, then in zip(counter.snapshot(), before))
    return {
        "seconds": seconds,
        "unet_calls": calls,
        "unet_samples": samples,
        "unet_backward": backward,
        "alignment": figures["alignment"],
        "preservation": figures["preservation"],
        "anchor_loss": figures["anchor_loss"],
        "delta_norm": float(delta.detach().norm()),
    }


def run_reference(args, parts, counter_box: list) -> list[dict]:
    """The published scripts' iteration on the same draws as `ours` (see the module docstring)."""
    import copy

    from advanchor.anchors import AnchorOptions, anchor_loss
    from advanchor.losses import unlearning_loss
    from advanchor.methods import PromptOptions
    from advanchor.methods.base import ddim_bin_timestep
    from advanchor.models import trainable_parameters
    from advanchor.text import encode, perturbed_embeddings, token_positions, tokenize

    frozen, unet = parts.unet, copy.deepcopy(parts.unet)
    counter = PassCounter(frozen, unet)
    counter_box.append(counter)
    trained = list(trainable_parameters(unet, "attn2").values())
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trained, lr=MODEL_LR)
    prompts = PromptOptions()
    erase, anchor = prompts.pairs(args.concept)[0]
    positions = token_positions(parts.tokenizer, anchor, args.concept)
    dim = parts.text_encoder.get_input_embeddings().embedding_dim
    torch.manual_seed(args.seed)  # delta's start, drawn as `method` draws it (AdvAnchor.prepare)
    delta = AnchorOptions().init_scale * torch.randn(len(positions), dim)
    anchor_ids = tokenize(parts.tokenizer, [anchor])

    def anchor_prediction(zt, t, delta):
        with perturbed_embeddings(parts.text_encoder, delta, positions):
            return frozen(zt, t, parts.text_encoder(anchor_ids)[0]).sample

    records = []
    torch.manual_seed(args.seed + 1)  # the draws of t and the noise, as in `run_ours`
    for z0 in latents(args, parts):
        start, before = time.perf_counter(), counter.snapshot()
        t = ddim_bin_timestep(parts.scheduler.config.num_train_timesteps, DDIM_STEPS)  # as ErasureMethod.noised
        zt = parts.scheduler.add_noise(z0, torch.randn_like(z0), t)
        with torch.no_grad():
            texts = encode(parts.text_encoder, parts.tokenizer, [erase, prompts.neutral])  # (2, L, D)
        emb_erase, emb_neutral = texts[:1], texts[1:]
        delta = delta.detach().requires_grad_(True)
        opt_delta = torch.optim.Adam([delta], lr=ANCHOR_LR)
        weights = torch.ones(1)

        for _ in range(args.inner_steps):
            eps_anchor = anchor_prediction(zt, t, delta)
            with torch.no_grad():
                frozen(zt, t, emb_neutral)  # computed and unused, as in the scripts
                eps_concept = frozen(zt, t, emb_erase).sample
            loss = anchor_loss("adv1", eps_anchor, eps_concept[None], None, weights, True)
            (delta.grad,) = torch.autograd.grad(loss, [delta])
            opt_delta.step()
        with torch.no_grad():
            eps_neutral = frozen(zt, t, emb_neutral).sample
            eps_anchor = anchor_prediction(zt, t, delta)
            final = anchor_loss("adv1", eps_anchor, eps_concept[None], None, weights, True)
        pred_neutral = unet(zt, t, emb_neutral).sample
        pred_erase = unet(zt, t, emb_erase).sample
        total, align, keep = unlearning_loss(pred_erase, eps_anchor, pred_neutral, eps_neutral, PRESERVATION)
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        figures = {"alignment": align.item(), "preservation": keep.item(), "anchor_loss": final.item()}
        records.append(iteration_record(time.perf_counter() - start, counter, before, figures, delta))
    return records


def child(args) -> None:
    """One mode in this process; prints its figures as JSON on the last line."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    import diffusers  # noqa: F401  (every library both modes use, so that the baseline holds them)
    import pytorch_lightning  # noqa: F401
    import transformers  # noqa: F401

    import advanchor.methods  # noqa: F401

    baseline = rss_mb()
    parts = load_parts(args.model)
    counters: list = []
    records = (run_ours if args.mode == "ours" else run_reference)(args, parts, counters)
    peak = peak_rss_mb()
    print(json.dumps({"records": records, "baseline_mb": baseline, "peak_mb": peak}))


def measure(args, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--mode", mode, *args.passthrough]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: the {mode} run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{mode}: {[round(r['seconds'], 1) for r in result['records']]} s per iteration", file=sys.stderr)
    return result


def summarise(args, results: dict[str, dict]) -> dict:
    measured = slice(args.warmup, None)

    def seconds(mode):
        return statistics.median(r["seconds"] for r in results[mode]["records"][measured])

    def memory(mode):
        return results[mode]["peak_mb"] - results[mode]["baseline_mb"]

    def close(key):
        pairs = [(a[key], b[key]) for a, b in zip(results["ours"]["records"], results["reference"]["records"])]
        return all(abs(a - b) <= args.rtol * max(abs(a), abs(b)) + args.atol for a, b in pairs)

    keys = ("alignment", "preservation", "anchor_loss", "delta_norm")
    counted = ("unet_calls", "unet_samples", "unet_backward")
    passes = {mode: {k: results[mode]["records"][-1][k] for k in counted} for mode in MODES}
    steps = args.inner_steps
    return {
        "time_ratio": seconds("ours") / seconds("reference"),
        "memory_ratio": memory("ours") / memory("reference"),
        "losses_match": all(close(k) for k in keys),
        "matches": {k: close(k) for k in keys},
        "seconds_per_iteration": {mode: seconds(mode) for mode in MODES},
        "peak_memory_mb": {mode: memory(mode) for mode in MODES},
        "peak_rss_mb": {mode: results[mode]["peak_mb"] for mode in MODES},
        "baseline_rss_mb": {mode: results[mode]["baseline_mb"] for mode in MODES},
        "passes_per_iteration": passes,
        # Forward: the anchor at each of the steps + 1 values of delta, eps*(c_0) and eps*(c_e) once, the trained
        # UNet at c_e and c_0. Backward: one per delta update, and the two trained predictions.
        "minimum_passes": {"unet_samples": steps + 1 + 2 + 2, "unet_backward": steps + 2},
        "records": {mode: results[mode]["records"] for mode in MODES},
        "settings": {
            "model": args.model,
            "latent": args.latent,
            "inner_steps": steps,
            "iterations": args.iterations,
            "warmup": args.warmup,
            "concept": args.concept,
            "threads": torch.get_num_threads() if not args.threads else args.threads,
            "rtol": args.rtol,
            "atol": args.atol,
            "torch": torch.__version__,
        },
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="diffusers pipeline folder, or toy")
    parser.add_argument("--latent", type=int, default=32, help="latent height and width")
    parser.add_argument("--inner-steps", type=int, default=30, help="delta updates per iteration (w_iter_break)")
    parser.add_argument("--iterations", type=int, default=2, help="outer iterations per mode")
    parser.add_argument("--warmup", type=int, default=1, help="leading iterations left out of the timing")
    parser.add_argument("--concept", default="van gogh")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance of losses_match")
    parser.add_argument(
        "--atol", type=float, default=1e-10, help="absolute tolerance (c_0's loss starts at 0, up to fp32 rounding)"
    )
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup >= args.iterations:
        parser.error("--warmup must be below --iterations: no iteration would be timed")
    args.passthrough = list(argv if argv is not None else sys.argv[1:])
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.mode:
        child(args)
        return {}
    if args.model == str(DEFAULT_MODEL) and not DEFAULT_MODEL.is_dir():
        from advanchor.standin import write_standin

        print(f"writing the SD 1.4 stand-in to {DEFAULT_MODEL}", file=sys.stderr)
        write_standin(DEFAULT_MODEL)
    results = {mode: measure(args, mode) for mode in MODES}
    summary = summarise(args, results)
    if args.json:
        from advanchor.export import write_atomic

        write_atomic(args.json, json.dumps(summary, indent=2))
    headline = ("time_ratio", "memory_ratio", "losses_match", "seconds_per_iteration", "peak_memory_mb")
    shown = {k: summary[k] for k in headline}
    print(json.dumps(shown, indent=2))
    return summary


if __name__ == "__main__":
    main()
