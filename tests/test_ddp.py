"""train.py under DDP on two CPU processes (gloo): each rank its own samples, one shared anchor, one run folder."""

import json
import os
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DistributedSampler

sys.path.insert(0, str(Path(__file__).parent))
from tiny import run_train_py  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGES, SHUFFLE_SEED = 8, 3


class RankRecord(pl.Callback):
    """Saves `<out>/rank<R>.pt` per rank: the dataset index of every sample its steps saw, its anchors and
    its trained weights at the end. train.py's child ranks import it as `test_ddp.RankRecord`."""

    def __init__(self, out: str):
        self.out = Path(out)
        self.seen: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        means = trainer.datamodule.dataset.mean  # the toy config trains on posterior means: exact copies
        for z in batch[0]:
            self.seen.append(next(i for i in range(len(means)) if torch.equal(means[i], z)))

    def on_train_end(self, trainer, pl_module):
        record = {
            "seen": self.seen,
            "deltas": [d.detach().clone() for d in pl_module.deltas],
            "trained": {n: p.detach().clone() for n, p in pl_module.trained.items()},
        }
        torch.save(record, self.out / f"rank{trainer.global_rank}.pt")


# interleaved: delta's inner loop in every step; sequential: its pass over the data before training.
@pytest.mark.parametrize("strategy", ["interleaved", "sequential"])
def test_ddp_ranks_split_the_data_and_share_the_anchor(tmp_path, strategy):
    records, outputs = tmp_path / "records", tmp_path / "outputs"
    records.mkdir()
    callback = {"class_path": "test_ddp.RankRecord", "init_args": {"out": str(records)}}
    pythonpath = os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
    proc = run_train_py(
        tmp_path,
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--trainer.max_steps=2",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.callbacks={json.dumps([callback])}",
        f"--data.generation.images_per_concept={IMAGES}",
        "--data.generation.steps=4",
        "--data.batch_size=2",  # two manual_backward calls per step, each synced by DDP
        f"--data.shuffle_seed={SHUFFLE_SEED}",
        f"--model.anchor.strategy={strategy}",
        "--model.anchor.max_inner_steps=3",
        "--eval.before=false",
        "--eval.seeds=1",
        "--eval.steps=2",
        f"--output_dir={outputs}",
        PYTHONPATH=pythonpath,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [torch.load(records / f"rank{r}.pt") for r in range(2)]

    # Each rank saw its own half of the images, in the order `data.shuffle_seed` chose.
    for r, record in enumerate(ranks):
        assert record["seen"] == list(DistributedSampler(range(IMAGES), 2, r, seed=SHUFFLE_SEED))
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == list(range(IMAGES))

    # One anchor and one UNet: the inner loop and DDP averaged their gradients over the ranks.
    for a, b in zip(ranks[0]["deltas"], ranks[1]["deltas"]):
        assert torch.equal(a, b)
    assert ranks[0]["deltas"][0].norm() > 1e-3, "the anchor never moved from its 1e-7 start"
    assert ranks[0]["trained"].keys() == ranks[1]["trained"].keys()
    for name, value in ranks[0]["trained"].items():
        assert torch.equal(value, ranks[1]["trained"][name]), name

    # Only rank 0 evaluated and wrote a run folder.
    assert proc.stdout.count("wrote ") == 1
    (run,) = outputs.iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 2 and "circle" in metrics["after"] and not metrics["before"]
