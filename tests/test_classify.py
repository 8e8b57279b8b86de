"""`pi-infer classify` on real photos with the real weights: the user's first sanity check.
In-process through cli.main, on the session's compiled model (conftest.classifier)."""

import json

from .cli_inprocess import run_cli
from .conftest import IMAGES, LABELS, PHOTO_ORDER, WEIGHTS, write_config
from .labels import check_still


def test_classify_json_labels_every_reference_photo(tmp_path, cache_dir, classifier, capsys):
    config = write_config(tmp_path / "c.yaml", {"model": {
        "weights": str(WEIGHTS), "labels": str(LABELS), "cache_dir": str(cache_dir)}})
    result = run_cli(capsys, "classify", "--json", "--config", str(config),
                     *[str(IMAGES / name) for name in PHOTO_ORDER])
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["image"].split("/")[-1] for row in rows] == PHOTO_ORDER
    for row in rows:
        name = row["image"].split("/")[-1]
        check_still(name, row)
        assert len(row["classes"]) == len(row["labels"]) == len(row["scores"]) == 5
        assert row["scores"] == sorted(row["scores"], reverse=True)
    by_name = {row["image"].split("/")[-1]: row for row in rows}
    assert by_name["grace_hopper.jpg"]["labels"][0] == "military uniform"
    assert by_name["coffee.png"]["labels"][0] == "espresso"
    assert by_name["bird.bmp"]["labels"][0] == "chickadee"
    assert by_name["coffee.png"]["scores"][0] > 0.9


def test_classify_text_and_an_unreadable_image(tmp_path, cache_dir, classifier, capsys):
    config = write_config(tmp_path / "c.yaml", {"model": {
        "weights": str(WEIGHTS), "cache_dir": str(cache_dir), "top_k": 2}})
    bogus = tmp_path / "not-an-image.jpg"
    bogus.write_text("hello")
    result = run_cli(capsys, "classify", "--config", str(config), str(IMAGES / "coffee.png"),
                     str(bogus))
    assert result.returncode == 1
    assert "coffee.png: espresso (967)" in result.stdout
    assert result.stdout.count("|") == 0 and result.stdout.count(",") == 1  # top_k: 2
    assert "not-an-image.jpg: cannot read it as an image" in result.stderr
