import json

from diffusers import StableDiffusionPipeline

from advanchor.toyworld.build import main
from advanchor.toyworld.classifier import load_classifier


def test_tiny_build_writes_loadable_artifacts(tmp_path):
    out = tmp_path / "assets"
    main(
        [
            "--out",
            str(out),
            "--images",
            "256",
            "--vae-steps",
            "20",
            "--unet-steps",
            "4",
            "--classifier-steps",
            "10",
            "--classifier-pool",
            "200",
        ]
    )
    assert not (tmp_path / "assets.tmp").exists()
    pipe = StableDiffusionPipeline.from_pretrained(out / "pipeline", local_files_only=True)
    assert pipe.vae.config.scaling_factor != 0.18215  # measured from the latents, not SD's constant
    clf = load_classifier(out / "classifier")
    assert len(clf.predict(pipe("a red circle", num_inference_steps=2, output_type="pil").images)) == 1
    report = json.loads((out / "build.json").read_text())
    assert report["unet_steps"] == 4 and set(report["classifier_accuracy"]) == {"shape", "color", "style"}
