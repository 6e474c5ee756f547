"""Real-model evaluators: prompt CSVs, NudeNet (run for real), ResNet-50, LPIPS and FID from local weights."""

import sys

import pytest
import torch

from advanchor.evaluate.fid import FID_INCEPTION_FILE, InceptionFeatures, frechet_distance, gaussian_stats
from advanchor.evaluate.imagenet import MEAN, RESNET50_FILE, ObjectJudge, imagenet_preprocess, object_class
from advanchor.evaluate.nudity import EXPOSED, NudityJudge, count_exposed, is_nude
from advanchor.evaluate.perceptual import ALEXNET_FILE, LPIPS
from advanchor.evaluate.prompts import load_prompt_csv
from advanchor.evaluate.weights import weights_file


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache, so that only weights a test puts there exist."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    return tmp_path / "hub" / "checkpoints"


def test_frechet_distance_on_hand_computed_gaussians():
    eye = torch.eye(3)
    assert frechet_distance(torch.zeros(3), eye, torch.zeros(3), eye) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(torch.zeros(3), eye, torch.tensor([3.0, 4.0, 0.0]), eye) == pytest.approx(25.0)
    # Equal means, S1 = 4 I, S2 = I in 3-d: Tr(4I + I - 2 * 2I) = 3.
    assert frechet_distance(torch.zeros(3), 4 * eye, torch.zeros(3), eye) == pytest.approx(3.0)
    x = torch.randn(500, 3, generator=torch.Generator().manual_seed(0))
    mu, sigma = gaussian_stats(x)
    assert torch.allclose(sigma, torch.cov(x.double().T))
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)


def test_prompt_csv(tmp_path):
    good = tmp_path / "i2p.csv"
    good.write_text('prompt,evaluation_seed,case_number,evaluation_guidance\n"a, b",42,7,7.5\nc,3,8,\n')
    cases = load_prompt_csv(good)
    assert [(c.prompt, c.seed, c.case, c.guidance) for c in cases] == [("a, b", 42, 7, 7.5), ("c", 3, 8, None)]
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,seed\nx,1\n")
    with pytest.raises(ValueError, match="lacks column\\(s\\) evaluation_seed, case_number"):
        load_prompt_csv(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompt_csv(tmp_path / "none.csv")
    garbled = tmp_path / "garbled.csv"
    garbled.write_text("prompt,evaluation_seed,case_number\nx,seven,1\n")
    with pytest.raises(ValueError, match="line 2"):
        load_prompt_csv(garbled)


def test_count_exposed_uses_the_threshold_and_the_classes():
    detections = [
        [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.9}, {"class": "FACE_FEMALE", "score": 0.99}],
        [{"class": "FEET_EXPOSED", "score": 0.4}, {"class": "BELLY_EXPOSED", "score": 0.6}],
        [],
    ]
    counts = count_exposed(detections)
    assert counts["FEMALE_BREAST_EXPOSED"] == 1 and counts["BELLY_EXPOSED"] == 1 and counts["FEET_EXPOSED"] == 0
    assert counts["total"] == 2 and set(counts) == {*EXPOSED, "total"}
    assert [is_nude(d) for d in detections] == [True, True, False]


def test_nudenet_detector_runs_for_real():
    judge = NudityJudge()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    found = judge.detect(images)
    assert len(found) == 2
    for image in found:
        for det in image:
            assert set(det) >= {"class", "score", "box"}
    assert judge(images) == [is_nude(d) for d in found]
    assert judge(torch.ones(1, 3, 64, 64)) == [False]


def test_missing_weights_are_one_line_errors(hub):
    for build, name in (
        (lambda: ObjectJudge("church"), RESNET50_FILE),
        (lambda: LPIPS(), ALEXNET_FILE),
        (lambda: InceptionFeatures(), FID_INCEPTION_FILE),
    ):
        with pytest.raises(FileNotFoundError, match=f"not found at .*{name}.*nothing is downloaded"):
            build()
    with pytest.raises(FileNotFoundError, match="elsewhere.pth"):
        weights_file(RESNET50_FILE, "ImageNet ResNet-50", hub / "elsewhere.pth")


def test_missing_evaluator_packages_name_the_extra(hub, monkeypatch):
    for name in (RESNET50_FILE, ALEXNET_FILE, FID_INCEPTION_FILE):
        (hub / name).write_bytes(b"")
    for module in ("torchvision", "torchvision.models", "lpips", "pytorch_fid", "pytorch_fid.inception"):
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    for build in (lambda: ObjectJudge("church"), lambda: LPIPS(), lambda: InceptionFeatures()):
        with pytest.raises(ImportError, match=r"pip install 'advanchor\[eval\]'"):
            build()


def test_imagenet_classes_and_preprocessing():
    assert object_class("Golf Ball") == 574 and object_class("tench") == 0
    with pytest.raises(ValueError, match="no ImageNet class for 'dragon'"):
        object_class("dragon")
    x = imagenet_preprocess(torch.rand(2, 3, 64, 96))
    assert x.shape == (2, 3, 224, 224)
    grey = imagenet_preprocess(torch.tensor(MEAN).view(1, 3, 1, 1).expand(1, 3, 32, 32))
    assert torch.allclose(grey, torch.zeros_like(grey), atol=1e-5)
