import json

from advanchor.toyworld.quality import main, probes
from advanchor.toyworld.vocab import COLORS, PARAPHRASES, SHAPES, STYLES


def test_probe_set_covers_every_prompt_family():
    prompts = [p.prompt for p in probes()]
    assert len(prompts) == len(set(prompts)) == len(SHAPES) * (2 * len(COLORS) + len(STYLES))
    assert "a blue circle" in prompts and "a star in dotted style" in prompts and "a red disc" in prompts


def test_quality_command_on_the_shipped_model(tmp_path, capsys):
    out = tmp_path / "q.json"
    main(["--seeds", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    words = set(SHAPES) | set(COLORS) | set(STYLES) | set(PARAPHRASES.values())
    assert set(report["per_concept"]) == words
    for key in ("shape_accuracy", "color_accuracy", "style_accuracy", "paraphrase_accuracy"):
        assert 0.0 <= report[key] <= 1.0
    # One seed is noisy, but a model that ignores its prompt would sit near chance (1/6).
    assert report["shape_accuracy"] >= 0.6
    assert report["color_accuracy"] >= 0.6
    assert "shape_accuracy" in capsys.readouterr().out
