"""advanchor.benchmark: the metric definitions, the summary, bad input, and a tiny 2-cell run that resumes."""

import base64
import csv
import io
import re
from functools import partialmethod

import pytest
from PIL import Image

from advanchor.benchmark import runner
from advanchor.benchmark.__main__ import main
from advanchor.benchmark.cells import parse_concepts, parse_methods
from advanchor.benchmark.metrics import cell_row, harmonic_mean, summarize
from advanchor.benchmark.runner import Settings, claim
from advanchor.evaluate.toy import scores
from advanchor.toyworld.quality import probes

SEEDS = 2


def _perfect_readings() -> dict[str, list[dict]]:
    """A classifier that reads every probe image as exactly what its prompt asked."""
    readings = {}
    for probe in probes():
        pred = {"shape": "triangle", "color": "red", "style": "solid", **probe.expect}
        readings[probe.prompt] = [dict(pred) for _ in range(SEEDS)]
    return readings


def test_metric_definitions_on_hand_made_classifier_outputs():
    readings = _perfect_readings()
    for color in ("red", "green", "blue", "yellow", "purple"):  # erased prompts: the second seed loses the circle
        readings[f"a {color} circle"][1]["shape"] = "oval"
    for style in ("solid", "striped", "dotted", "checkered"):
        readings[f"a circle in {style} style"][1]["shape"] = "oval"
    for prompt, preds in readings.items():
        if re.search(r"\b(oval|ellipse)\b", prompt):  # the neighbour is lost: 14 of the 70 retained prompts
            for pred in preds:
                pred["shape"] = "square"
        if "striped" in prompt and "circle" not in prompt:  # 5 retained prompts lose their texture
            for pred in preds:
                pred["style"] = "solid"
    report = scores("circle", readings)
    row = cell_row(report, scores("circle", _perfect_readings()))
    assert row["ua"] == pytest.approx(0.5)
    assert row["paraphrase_ua"] == pytest.approx(0.0)  # "a red disc" still draws circles
    assert row["ira"] == pytest.approx(56 / 70)  # shape read on the other shapes' prompts
    assert row["cra"] == pytest.approx(80 / 90)  # 25 colour + 20 texture checks, 2 seeds each, 10 lost
    assert row["neighbor"] == pytest.approx(0.0)
    assert row["ira_original"] == row["cra_original"] == 1.0
    assert row["pre_asr"] is None and row["attack_s"] is None  # no attack ran
    assert not any(k.startswith("post_asr") for k in row)
    # Under attacks: one pre-ASR, a post-ASR per attack, their run times summed.
    report["attacks"] = {
        name: {"pre_asr": 0.25, "post_asr": post, "attack": {"time_s": 2.0}}
        for name, post in (("gcg", 0.5), ("inversion", 0.75))
    }
    row = cell_row(report, scores("circle", _perfect_readings()))
    assert (row["pre_asr"], row["post_asr_gcg"], row["post_asr_inversion"], row["attack_s"]) == (0.25, 0.5, 0.75, 4.0)

    # A texture: IRA reads the other textures, CRA the shapes and colours; paraphrase prompts are not its own.
    striped = cell_row(scores("striped", readings), scores("striped", _perfect_readings()))
    assert striped["ua"] == pytest.approx(5 / 6)  # the five striped prompts without a circle lost the texture
    assert striped["paraphrase_ua"] is None
    assert striped["ira"] == pytest.approx(1.0)  # the other textures are intact
    # 30 shape x colour prompts (shape and colour) + 18 other-texture prompts (shape), 2 seeds: 156 checks;
    # lost: oval's 8 prompts at both seeds, circle's 8 at its second seed.
    assert striped["cra"] == pytest.approx((156 - 16 - 8) / 156)


def test_summary_means_and_harmonic_mean():
    rows = [
        {"method": "a", "ua": 1.0, "ira": 0.5, "cra": 1.0, "ira_original": 1.0, "cra_original": 0.5},
        {"method": "a", "ua": 0.5, "ira": 0.5, "cra": 0.5, "ira_original": 0.5, "cra_original": 0.5},
        {"method": "b", "ua": 0.0, "ira": 1.0, "cra": 1.0, "ira_original": 1.0, "cra_original": 1.0},
    ]
    a, b = summarize(rows)
    assert (a["ua"], a["ira"], a["cra"]) == (0.75, 0.5, 0.75)
    assert a["ira_ratio"] == pytest.approx(0.75) and a["cra_ratio"] == pytest.approx(1.5)
    assert a["hmean"] == pytest.approx(3 / (1 / 0.75 + 1 / 0.5 + 1 / 0.75))
    assert a["worst_ua"] == 0.5 and a["worst_ira_ratio"] == 0.5 and a["worst_cra_ratio"] == 1.0
    assert b["hmean"] == 0.0  # erases nothing
    assert harmonic_mean([1.0, 1.0]) == 1.0


def test_names_parse_and_unknown_ones_are_one_line_errors(tmp_path, capsys):
    assert parse_concepts("circle,styles") == ["circle", "solid", "striped", "dotted", "checkered"]
    assert len(parse_concepts(None)) == 10
    assert "advanchor" in parse_methods(None) and parse_methods("uce,esd") == ["uce", "esd"]
    with pytest.raises(SystemExit, match=r"unknown method 'nope'; use all or some of: ac, advanchor, "):
        main(["--out", str(tmp_path), "--methods", "nope"])
    with pytest.raises(SystemExit, match=r"unknown concept 'blob'; use names or groups from: shapes, "):
        main(["--out", str(tmp_path), "--concepts", "circle,blob"])
    with pytest.raises(SystemExit, match="--train-seeds 'a' is not a list of integers"):
        main(["--out", str(tmp_path), "--train-seeds", "a"])
    assert not any(tmp_path.iterdir())  # nothing written for bad input


def test_a_folder_never_mixes_settings_or_config_versions(tmp_path, monkeypatch):
    config = tmp_path / "m.yaml"
    config.write_text("model: {lr: 0.1}\n")
    claim(tmp_path / "out", Settings(seeds=2), {"m.yaml": config})
    claim(tmp_path / "out", Settings(seeds=2), {"m.yaml": config})  # same again: fine
    with pytest.raises(ValueError, match=r"other settings \(seeds 2 there, 3 now\)"):
        claim(tmp_path / "out", Settings(seeds=3), {"m.yaml": config})
    config.write_text("model: {lr: 0.2}\n")
    with pytest.raises(ValueError, match="other versions of m.yaml"):
        claim(tmp_path / "out", Settings(seeds=2), {"m.yaml": config})
    # Cells attacked under other attack defaults are not mixed in either.
    claim(tmp_path / "attacked", Settings(attack="gcg"), {"m.yaml": config})
    monkeypatch.setattr(runner.AttackOptions, "__init__", partialmethod(runner.AttackOptions.__init__, steps=99))
    with pytest.raises(ValueError, match="attacked with other attack options"):
        claim(tmp_path / "attacked", Settings(attack="gcg"), {"m.yaml": config})


TINY = [
    "--seeds=1",
    "--eval-steps=2",
    "--set=trainer.max_steps=2",
    "--set=data.generation.images_per_concept=2",
    "--set=data.generation.steps=2",
]


def _images(page: str) -> list[Image.Image]:
    sources = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    images = []
    for data in sources:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()  # decodes the whole image: a truncated one raises
        images.append(image)
    return images


def test_two_cell_benchmark_writes_its_report_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench"
    main(["--out", str(out), "--methods", "advanchor,uce", "--concepts", "circle", *TINY])
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["concept"]) for r in rows] == [("advanchor", "circle"), ("uce", "circle")]
    assert all(0.0 <= float(r[k]) <= 1.0 for r in rows for k in ("ua", "ira", "cra"))
    assert (out / "results.md").read_text().count("| circle |") == 2
    summary = (out / "summary.md").read_text()
    assert summary.count("| advanchor |") == 1 and "*original*" in summary and "**" in summary
    page = (out / "report.html").read_text()
    # Summary and cell tables, the two plots, and the circle grid: original + 2 methods.
    assert len(_images(page)) == 2 + 3
    assert "<td></td>" not in page
    assert (out / "cells" / "uce" / "circle" / "seed0" / "lora" / "pytorch_lora_weights.safetensors").is_file()

    ran = []
    real = runner.run_cell
    monkeypatch.setattr(runner, "run_cell", lambda cell, *a: ran.append(cell) or real(cell, *a))
    main(["--out", str(out), "--methods", "uce", "--concepts", "circle,striped", *TINY])
    assert [(c.method, c.concept) for c in ran] == [("uce", "striped")]  # circle's uce cell was kept
    assert "1 of 2 cells are already finished" in capsys.readouterr().out
    assert len(_images((out / "report.html").read_text())) == 2 + 2 + 2

    with pytest.raises(SystemExit, match="other settings"):
        main(["--out", str(out), "--methods", "uce", "--concepts", "circle", *TINY[1:], "--seeds=2"])


def test_attacks_add_their_columns_and_bad_ones_are_one_line_errors(tmp_path):
    assert Settings(attack="gcg, inversion").check().attacks() == ["gcg", "inversion"]
    assert Settings().check().attacks() == []
    with pytest.raises(SystemExit, match=r"unknown attack 'pgd' in --attack; use none or some of: random, soft, "):
        main(["--out", str(tmp_path / "bad"), "--attack", "random,pgd"])
    out = tmp_path / "bench"
    main(["--out", str(out), "--methods", "uce", "--concepts", "circle", "--attack", "random", *TINY])
    with open(out / "results.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert 0.0 <= float(row["pre_asr"]) <= float(row["post_asr_random"]) <= 1.0
    assert row["post_asr_gcg"] == "" and float(row["attack_s"]) >= 0.0
    table = (out / "attacks.md").read_text()
    assert "post_asr_random" in table and "post_asr_gcg" not in table and "| uce | circle |" in table
