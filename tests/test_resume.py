"""Resuming train.py: a run killed with SIGKILL and resumed with `--ckpt_path last` ends where an
uninterrupted run does; checkpoints hold only what trains; a missing checkpoint is a one-line error."""

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import safetensors.torch
import torch
from lightning_fabric.plugins.io import torch_io
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from tiny import run_train_py, tiny_data, tiny_module, tiny_trainer  # noqa: E402

from advanchor.anchors import AnchorOptions  # noqa: E402
from advanchor.checkpoints import AtomicCheckpointIO, RunCheckpoint, last_checkpoint  # noqa: E402
from advanchor.cli import main  # noqa: E402
from advanchor.data import ConceptData  # noqa: E402
from advanchor.export import LORA_WEIGHT_NAME  # noqa: E402
from advanchor.order import shuffled  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS, EVERY = 12, 4
# The toy config (LoRA, interleaved anchors with their own Adams), shortened: 5 images, so the kill lands
# mid-epoch and the resumed run crosses epochs.
ARGS = [
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    f"--trainer.max_steps={STEPS}",
    f"--checkpoint.every_n_steps={EVERY}",
    "--data.generation.images_per_concept=5",
    "--eval.before=false",
    "--eval.seeds=1",
    "--eval.steps=2",
]


def checkpoint_step(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def adapter(run: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(run / "lora" / LORA_WEIGHT_NAME)


def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    outputs = tmp_path / "outputs"
    whole = run_train_py(tmp_path, *ARGS, f"--output_dir={outputs}", "--run_name=whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    env = {**os.environ, "ADVANCHOR_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "disabled"}
    command = [sys.executable, str(ROOT / "train.py"), *ARGS, f"--output_dir={outputs}"]
    killed = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, runs = time.time() + 120, []
        while killed.poll() is None and time.time() < deadline:
            runs = [p for p in outputs.iterdir() if p.name != "whole"]
            if runs and last_checkpoint(runs[0]).is_file():
                break  # the first checkpoint, at step EVERY: mid-way through the run and its first epoch
            time.sleep(0.02)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run ended before a checkpoint was written"
    (run,) = runs
    step = checkpoint_step(last_checkpoint(run))
    assert 0 < step < STEPS and not (run / "lora").exists()

    # No --run_name: `last` is the newest run of the method and concepts with a checkpoint, and the
    # resumed run writes there.
    resumed = run_train_py(tmp_path, *ARGS, f"--output_dir={outputs}", "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {last_checkpoint(run)}" in resumed.stderr
    assert "warn" not in resumed.stderr.lower()
    assert sorted(p.name for p in outputs.iterdir()) == sorted(["whole", run.name])
    assert checkpoint_step(last_checkpoint(run)) == STEPS

    expected, got = adapter(outputs / "whole"), adapter(run)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=name)


def short_fit(tmp_path, steps: int, module, ckpt_path=None, every: int = 0) -> pl.Trainer:
    data = tiny_data(tmp_path, images=3)
    trainer = tiny_trainer(steps)
    trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    if every:
        trainer.callbacks.append(RunCheckpoint(tmp_path / "run", every))
    with warnings.catch_warnings():
        # Lightning warns when it resumes mid-epoch with a loader that cannot (advanchor.order's can).
        warnings.filterwarnings("error", message=".*not resumable")
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    return trainer


def sequential_module(trainable: str = "attn2"):
    """AdvAnchor with everything a checkpoint must carry: a sequential anchor with its Adam, a SalUn mask and
    gradients that are never zeroed."""
    pl.seed_everything(0, verbose=False)
    anchor = AnchorOptions(strategy="sequential", lr=1e-2, max_inner_steps=3)
    return tiny_module(trainable, anchor=anchor, mask="salun", mask_ratio=0.5, paper_grad_accumulation=True)


def test_checkpoint_holds_what_trains_and_resumes_exactly(tmp_path, monkeypatch):
    whole = sequential_module()
    short_fit(tmp_path, 5, whole)

    first = sequential_module()
    short_fit(tmp_path, 2, first, every=2)
    path = last_checkpoint(tmp_path / "run")
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] == 2
    trained = {f"unet.{name}" for name in first.trained} | {"deltas.0"}
    assert set(checkpoint["state_dict"]) == trained, "the frozen UNet and text encoder stay out"
    assert checkpoint["masks"].keys() == first.trained.keys()
    assert set(checkpoint["grads"]) >= {f"unet.{name}" for name in first.trained}  # never zeroed
    assert len(checkpoint["delta_optimizers"]) == 1 and "torch" in checkpoint["rng"]

    # The resumed run keeps the checkpoint's anchor (a sequential one is only read in training) and mask.
    def no_anchor_pass(self):
        raise AssertionError("the resumed run ran the anchor pass again")

    monkeypatch.setattr(ConceptData, "anchor_dataloader", no_anchor_pass)
    resumed = sequential_module()
    trainer = short_fit(tmp_path, 5, resumed, ckpt_path=path, every=2)
    assert trainer.global_step == 5
    assert torch.equal(resumed.deltas[0].detach(), checkpoint["state_dict"]["deltas.0"])
    for name, keep in checkpoint["masks"].items():
        assert torch.equal(resumed.masks[name].cpu(), keep), name
    for name, p in whole.trained.items():
        torch.testing.assert_close(resumed.trained[name], p, rtol=0, atol=1e-7, msg=name)


def test_another_runs_checkpoint_is_refused(tmp_path):
    short_fit(tmp_path, 1, sequential_module(), every=1)
    other = sequential_module("attn2-kv")  # fewer trained parameters
    with pytest.raises(ValueError, match="the checkpoint's trained parameters are not this run's"):
        short_fit(tmp_path / "b", 2, other, ckpt_path=last_checkpoint(tmp_path / "run"))


@pytest.mark.parametrize(
    "flags,start",
    [
        (["--run_name=r"], "error: run {out}/r has no checkpoint to resume"),
        ([], "error: no advanchor-circle-<time> run under {out} has checkpoints/last.ckpt"),
    ],
)
def test_missing_last_checkpoint_is_a_one_line_error(tmp_path, flags, start):
    out = tmp_path / "outputs"
    with pytest.raises(SystemExit) as exit_info:
        main(["--trainer.logger=false", f"--output_dir={out}", "--ckpt_path=last", *flags])
    message = str(exit_info.value)
    assert message.startswith(start.format(out=out)) and "\n" not in message
    assert "--ckpt_path" in message and not out.exists()


def test_missing_checkpoint_file_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--trainer.logger=false", f"--output_dir={tmp_path}", f"--ckpt_path={tmp_path / 'x.ckpt'}"])
    assert str(exit_info.value).startswith(f"error: no checkpoint at --ckpt_path {tmp_path / 'x.ckpt'}")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 4}, path)

    def torn(checkpoint, filepath):
        Path(filepath).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch_io, "_atomic_save", torn)  # what Lightning writes the file with
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"global_step": 8}, path)
    assert io.load_checkpoint(path) == {"global_step": 4}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


class Seen(pl.LightningModule):
    """Records the samples of each step."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch[0].tolist())
        self.optimizers().step()

    def configure_optimizers(self):
        return torch.optim.SGD([self.weight], lr=0.1)


@pytest.mark.parametrize("size,batch_size", [(3, 1), (5, 2), (4, 2)])
def test_an_uninterrupted_run_keeps_the_order_of_a_shuffled_loader(size, batch_size):
    """What a run sees did not change with the resumable order: `shuffled` is the order that
    `DataLoader(shuffle=True, generator=seeded)` gives a Trainer, epoch after epoch."""
    loader = DataLoader(
        TensorDataset(torch.arange(size)), batch_size, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    module, epochs = Seen(), 4
    steps = epochs * -(-size // batch_size)
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, loader)
    seen = [i for batch in module.seen for i in batch]
    assert seen == [i for epoch in range(epochs) for i in shuffled(size, batch_size, 3, epoch)]
