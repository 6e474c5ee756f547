"""benchmarks/step_cost.py on a tiny pipeline: both modes compute the same losses, and ours makes only the
passes the algorithm needs (timings are the benchmark's to report, never asserted here)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tiny import load_benchmark, tiny_pipeline  # noqa: E402


def test_ours_matches_the_reference_with_the_minimum_of_passes(tmp_path):
    tiny_pipeline().save_pretrained(tmp_path / "tiny")
    steps = 3
    summary = load_benchmark("step_cost").main(
        ["--model", str(tmp_path / "tiny"), "--concept", "circle", "--latent", "8", "--inner-steps", str(steps),
         "--iterations", "2", "--json", str(tmp_path / "cost.json")]
    )  # fmt: skip
    assert summary["losses_match"], summary["matches"]
    ours, reference = summary["passes_per_iteration"]["ours"], summary["passes_per_iteration"]["reference"]
    minimum = summary["minimum_passes"]
    assert ours["unet_samples"] == minimum["unet_samples"] == steps + 5
    assert ours["unet_backward"] == minimum["unet_backward"] == steps + 2
    # Three frozen passes per inner step, then the anchor and c_0 again and the two trained passes.
    assert reference["unet_samples"] == 3 * steps + 4
    assert reference["unet_backward"] == steps + 2
    assert (tmp_path / "cost.json").is_file()
    for mode in ("ours", "reference"):
        assert summary["peak_memory_mb"][mode] > 0
        assert len(summary["records"][mode]) == 2
