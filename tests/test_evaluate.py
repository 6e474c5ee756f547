"""Toy-world evaluation: metrics agree with an independent generation, fidelity, determinism.

The attacks' own tests are in test_attack.py.
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_pipeline  # noqa: E402

from advanchor.evaluate.__main__ import main  # noqa: E402
from advanchor.evaluate.fidelity import pixel_distance  # noqa: E402
from advanchor.evaluate.toy import split_probes  # noqa: E402
from advanchor.toyworld import load_classifier, pipeline_path  # noqa: E402


def test_pixel_distance():
    a = torch.zeros(2, 3, 4, 4)
    assert pixel_distance(a, a) == 0.0
    assert pixel_distance(a, torch.ones_like(a)) == 1.0
    assert pixel_distance(a, torch.full_like(a, 0.25)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="paired"):
        pixel_distance(a, a[:1])


def test_toy_metrics_agree_with_an_independent_generation(tmp_path):
    report = main(["--concept", "circle", "--seeds", "2", "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text())["erased_accuracy"] == report["erased_accuracy"]
    # Independently: plain StableDiffusionPipeline calls, one seeded generator per image, PIL output.
    pipe = StableDiffusionPipeline.from_pretrained(pipeline_path())
    pipe.set_progress_bar_config(disable=True)
    classifier = load_classifier()
    erased, _, _ = split_probes("circle")
    shows = []
    for probe in erased:
        for seed in range(2):
            image = pipe(
                probe.prompt, generator=torch.Generator().manual_seed(seed), guidance_scale=4.0, num_inference_steps=25
            ).images[0]
            shows.append(classifier.predict([image])[0]["shape"] == "circle")
    independent = sum(shows) / len(shows)
    # PIL output rounds pixels to 8 bits, which may flip at most one borderline reading.
    assert abs(report["erased_accuracy"] - independent) <= 1 / len(shows)
    assert report["erased_accuracy"] >= 0.85
    # The unedited model is its own original: fidelity 0, and nothing to attack.
    assert report["fidelity"] < 1e-3
    assert report["post_asr"] == report["pre_asr"]


def test_random_attack_report_is_deterministic_and_post_covers_pre():
    args = ["--concept", "square", "--seeds", "1", "--attack", "random", "--attack-rounds", "2"]
    first, second = main(args), main(args)
    assert first["post_asr"] >= first["pre_asr"]
    for report in (first, second):  # run times differ
        assert report["attack"].pop("time_s") >= 0
        for result in report["attack"]["results"]:
            result.pop("seconds")
    assert first == second


def test_evaluate_cli_errors_are_one_line(capsys):
    with pytest.raises(SystemExit, match="unknown toy-world concept 'dragon'"):
        main(["--concept", "dragon"])
    with pytest.raises(SystemExit, match="LoRA 'nowhere' does not exist"):
        main(["--concept", "circle", "--lora", "nowhere"])


def test_first_seed_moves_the_evaluation_to_other_seeds():
    from advanchor.evaluate.run import EvalOptions
    from advanchor.toyworld.quality import probe_images, probes

    pipe, items = tiny_pipeline(), probes()[:2]
    both = probe_images(pipe, items, 2, 2.0, 2)  # seeds 0, 1 per probe: (4, 3, H, W)
    shifted = probe_images(pipe, items, 1, 2.0, 2, first_seed=1)  # seed 1 per probe
    assert torch.allclose(shifted, both[1::2], atol=1e-6)
    assert not torch.allclose(shifted, both[0::2])
    with pytest.raises(ValueError, match="first_seed must be 0 or more"):
        EvalOptions(first_seed=-1).check()
