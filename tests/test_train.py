"""`pi-infer train`: a dataset made from the shared photos, trained for real, used by the daemon.

Each label's examples are different crops, flips and brightness changes of its photos; the
trained model must then name unseen variations (another seed) through `pi-infer classify` and
the photos of a video through the daemon, as a user's own sensor would.

The commands run in-process (cli_inprocess) and the daemon too (start_service); the system
tests run `train` once end to end through the real process, and a refused dataset of each kind.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from pidaemon.bench.training import make_dataset as bench_dataset
from pidaemon.train.progress import Progress

from .cli_inprocess import run_cli, run_cli_captured
from .conftest import (
    IMAGES,
    LABELS,
    PHOTO_ORDER,
    WEIGHTS,
    base_config,
    pi_infer,
    write_config,
    write_video,
)

LABEL_PHOTOS = {"bird": ["bird.bmp"], "cat": ["chelsea.png", "cat_720p.jpg"],
                "espresso": ["coffee.png"], "person": ["grace_hopper.jpg"]}
PHOTO_LABEL = {photo: label for label, photos in LABEL_PHOTOS.items() for photo in photos}
PER_LABEL = 12

# Its module fixtures are built once, on one pytest-xdist worker (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("train")


def make_dataset(root: Path, labels: dict[str, list[str]], per_label: int, seed: int) -> Path:
    """Variations of the shared photos (crops, flips, brightness), as the bench makes them."""
    paths = {label: [str(IMAGES / name) for name in names] for label, names in labels.items()}
    return bench_dataset(root, paths, per_label, seed)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """inference.threads: 1, so the test runs the same on a busy machine."""
    path = tmp_path_factory.mktemp("cfg") / "base.yaml"
    return write_config(path, {"model": {"weights": str(WEIGHTS)}, "inference": {"threads": 1}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, base_cfg: Path) -> dict:
    """4 labels x 12 images, one broken file among them, trained once for the module."""
    root = tmp_path_factory.mktemp("train")
    dataset = make_dataset(root / "dataset", LABEL_PHOTOS, PER_LABEL, seed=1)
    (dataset / "cat" / "half-copied.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    output = root / "my-model"
    result = run_cli_captured("train", str(dataset), "--output", str(output), "--config",
                              str(base_cfg), "--augment", "4")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr  # no progress bar off a terminal
    return {"root": root, "dataset": dataset, "output": output, "stdout": result.stdout}


def test_train_writes_the_model_labels_and_report(trained: dict) -> None:
    output, dataset = trained["output"], trained["dataset"]
    assert sorted(p.name for p in output.iterdir()) == ["labels.txt", "model.pt", "report.json"]
    labels = sorted(LABEL_PHOTOS)
    assert (output / "labels.txt").read_text().splitlines() == labels
    report = json.loads((output / "report.json").read_text())
    assert report["labels"] == labels
    assert report["images"] == dict.fromkeys(labels, PER_LABEL)
    assert report["unreadable"] == [str(dataset / "cat" / "half-copied.jpg")]
    held_out = report["held_out_images"]
    assert all(held_out[label] >= 1 for label in labels)
    assert all(report["train_images"][label] + held_out[label] == PER_LABEL for label in labels)
    counts = report["confusion_matrix"]["counts"]
    assert [sum(row) for row in counts] == [held_out[label] for label in labels]
    correct = sum(counts[i][i] for i in range(len(labels)))
    assert report["held_out_accuracy"] == pytest.approx(correct / sum(held_out.values()), abs=1e-3)
    assert report["held_out_accuracy"] >= 0.8
    assert report["training_seconds"]["total"] > 0
    # The lines a user pastes into the config, and the skipped file named.
    assert f"torchscript: {output.resolve() / 'model.pt'}" in trained["stdout"]
    assert f"labels: {output.resolve() / 'labels.txt'}" in trained["stdout"]
    assert f"weights: null  # torchscript replaces it (train again with --config naming " \
           f"{WEIGHTS})" in trained["stdout"]
    assert "skipped 1 unreadable file(s)" in trained["stdout"]
    # Nothing left beside the output folder.
    assert not [p for p in output.parent.iterdir() if p.name.startswith(".")]


def test_trained_model_names_unseen_variations_in_classify(trained: dict, tmp_path: Path,
                                                           capsys) -> None:
    unseen = make_dataset(tmp_path / "unseen", LABEL_PHOTOS, 2, seed=99)
    config = write_config(tmp_path / "use.yaml", {"model": {
        "torchscript": str(trained["output"] / "model.pt"),
        "labels": str(trained["output"] / "labels.txt")}})
    images = sorted(unseen.glob("*/*.jpg"))
    result = run_cli(capsys, "classify", "--json", "--config", str(config), *map(str, images))
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == len(images)
    for answer in answers:
        expected = Path(answer["image"]).parent.name
        assert answer["labels"][0] == expected, answer
        assert answer["scores"][0] > 0.5 and answer["scores"][0] - answer["scores"][1] > 0.2, \
            answer


def test_daemon_runs_the_trained_model_on_a_video(trained: dict, tmp_path: Path,
                                                  start_service) -> None:
    video = write_video(tmp_path / "photos.avi", PHOTO_ORDER, 0.4, fps=25)
    config = write_config(tmp_path / "use.yaml", {
        "camera": {"fps": 25},
        "model": {"torchscript": str(trained["output"] / "model.pt"),
                  "labels": str(trained["output"] / "labels.txt")},
        "inference": {"threads": 1},
        "output": {"every_frame": True, "interval": 0.5}})
    daemon = start_service("--config", str(config), "--source", str(video))
    assert daemon.finish(timeout=120) == 0
    model = daemon.of("model")
    assert model and model[0]["classes"] == len(LABEL_PHOTOS)
    predictions = daemon.of("prediction")
    assert len(predictions) >= 10
    runs: list[str] = []
    for prediction in predictions:
        if not runs or runs[-1] != prediction["label"]:
            runs.append(prediction["label"])
    shown = [PHOTO_LABEL[name] for name in PHOTO_ORDER]
    assert runs == shown, [(p["label"], p["score"]) for p in predictions]


def test_a_reload_deploys_the_trained_model(trained: dict, tmp_path: Path, cache_dir: Path,
                                             classifier, start_service) -> None:
    """docs/training.md's step 4: the lines `train` printed, then a reload (SIGHUP's work); the
    daemon keeps running."""
    bird = write_video(tmp_path / "bird.avi", ["bird.bmp"], 1.0)
    path = tmp_path / "c.yaml"
    config = base_config(cache_dir, camera={"loop": True, "device": str(bird)},
                         output={"every_frame": True})
    write_config(path, config)
    daemon = start_service("--config", str(path))
    daemon.wait_for(lambda e: e["event"] == "prediction" and len(e["classes"]) == 5)
    config["model"].update(torchscript=str(trained["output"] / "model.pt"),
                           labels=str(trained["output"] / "labels.txt"), weights=None)
    write_config(path, config)
    daemon.reload()
    model = str(trained["output"] / "model.pt")
    daemon.wait_for(lambda e: e["event"] == "model" and
                    e["message"].startswith(f"model: reloaded TorchScript {model}"), timeout=90)
    after = len(daemon.of("prediction"))
    daemon.wait_for(lambda e: len(daemon.of("prediction")) >= after + 5)
    for prediction in daemon.of("prediction")[-3:]:
        assert prediction["label"] == "bird", prediction
        assert sorted(prediction["labels"]) == sorted(LABEL_PHOTOS), prediction
    assert daemon.running
    daemon.stop()
    assert daemon.finish() == 0


def test_results_of_the_old_model_keep_its_labels_after_a_swap(trained: dict) -> None:
    """A reload to a model with other labels: results still queued from the old model (class
    900 of 1000) used to be named with the new 4 labels, and the results thread died."""
    from pidaemon.config import Config, InferenceConfig, ModelConfig
    from pidaemon.model.classifier import load_classifier
    from pidaemon.pipeline import Pipeline, Result
    from pidaemon.pipeline.results import Window

    from .fakes import PhotoCamera, Recorder

    mine = load_classifier(ModelConfig(torchscript=str(trained["output"] / "model.pt"),
                                       labels=str(trained["output"] / "labels.txt")),
                           InferenceConfig(threads=1))
    recorder = Recorder()
    named: list[str] = []

    class Names(Recorder):
        def on_result(self, result: Result, labels: list[str]) -> None:
            named.append(labels[result.classes[0]])

    pipeline = Pipeline(mine, Config(), PhotoCamera("bird.bmp"), [recorder, Names()])
    imagenet = LABELS.read_text().splitlines()
    old = Result(1, 0.0, 0.01, 10.0, [900, 1], [0.9, 0.1], labels=imagenet)
    pipeline.on_result(old)
    pipeline.on_windows({None: Window(10.0, 10.0, 10.0)})
    assert named == [imagenet[900]]
    assert pipeline.snapshot().stats.label == imagenet[900]


def test_a_model_below_min_accuracy_is_not_written(tmp_path: Path, base_cfg: Path,
                                                   trained: dict, capsys) -> None:
    """Two labels with the same photos cannot be told apart: the old model stays in place."""
    dataset = make_dataset(tmp_path / "dataset", {"left": ["chelsea.png"]}, 6, seed=3)
    (dataset / "right").mkdir()
    for image in (dataset / "left").iterdir():
        (dataset / "right" / image.name).write_bytes(image.read_bytes())
    output = tmp_path / "model"
    output.mkdir()
    for name in ("model.pt", "labels.txt", "report.json"):
        (output / name).write_bytes((trained["output"] / name).read_bytes())
    before = digest(output)
    result = run_cli(capsys, "train", str(dataset), "--output", str(output), "--config",
                     str(base_cfg), "--augment", "2", timeout=600)
    assert result.returncode == 1, result.stderr
    message = result.stderr.strip()
    assert message.startswith("pi-infer: error: held-out accuracy 0.")
    assert "below --min-accuracy 0.8" in message and "Traceback" not in message
    assert "confuses" in message and "left" in message and "right" in message
    assert digest(output) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_training_again_replaces_an_earlier_output_whole(tmp_path: Path, base_cfg: Path,
                                                         trained: dict, capsys) -> None:
    dataset = make_dataset(tmp_path / "dataset", {"bird": ["bird.bmp"],
                                                  "espresso": ["coffee.png"]}, 6, seed=5)
    output = tmp_path / "model"
    output.mkdir()
    for name in ("model.pt", "labels.txt", "report.json"):
        (output / name).write_bytes((trained["output"] / name).read_bytes())
    result = run_cli(capsys, "train", str(dataset), "--output", str(output), "--config",
                     str(base_cfg), "--augment", "2", timeout=600)
    assert result.returncode == 0, result.stderr
    assert (output / "labels.txt").read_text().splitlines() == ["bird", "espresso"]
    assert json.loads((output / "report.json").read_text())["images"] == {"bird": 6,
                                                                          "espresso": 6}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.system
def test_train_through_the_process_end_to_end(tmp_path: Path, base_cfg: Path) -> None:
    """`pi-infer train` as a user runs it, its output a pipe: the files, the lines to paste into
    the config, no progress bar."""
    dataset = make_dataset(tmp_path / "dataset", {"bird": ["bird.bmp"],
                                                  "espresso": ["coffee.png"]}, 6, seed=5)
    output = tmp_path / "model"
    result = pi_infer("train", str(dataset), "--output", str(output), "--config", str(base_cfg),
                      "--augment", "2", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr  # no progress bar in a pipe
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in output.iterdir()) == ["labels.txt", "model.pt", "report.json"]
    assert (output / "labels.txt").read_text().splitlines() == ["bird", "espresso"]
    assert f"torchscript: {output.resolve() / 'model.pt'}" in result.stdout
    assert f"labels: {output.resolve() / 'labels.txt'}" in result.stdout


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_is_drawn_on_a_terminal_only() -> None:
    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = Progress("features", 4, stream)
        progress.advance(2)
        progress.advance(2)
        progress.close()
    assert terminal.getvalue().startswith("\rfeatures [" + "#" * 15 + "." * 15 + "] 2/4")
    assert "] 4/4 " in terminal.getvalue() and terminal.getvalue().endswith("\n")
    assert pipe.getvalue() == ""


def _bad_dataset(tmp_path: Path, case: str) -> Path:
    """A dataset with one thing wrong (each case needs no model: refused before loading)."""
    root = tmp_path / "dataset"
    if case == "missing":
        return root
    if case == "a file":
        root.write_text("not a folder")
        return root
    good = {"bird": ["bird.bmp"], "espresso": ["coffee.png"]}
    make_dataset(root, good, 6, seed=7)
    if case == "one label":
        for image in (root / "espresso").iterdir():
            image.unlink()
        (root / "espresso").rmdir()
    elif case == "empty label":
        (root / "empty").mkdir()
    elif case == "too few usable":
        for image in sorted((root / "espresso").iterdir())[:3]:
            image.write_bytes(b"broken")
    elif case == "stray file":
        (root / "notes.txt").write_text("a file where a label folder belongs")
    return root


BAD = {
    "missing": (2, "no such folder"),
    "a file": (2, "is a file; give a folder with one sub-folder of images per label"),
    "one label": (78, "needs at least 2 label folders, found only 'bird'"),
    "empty label": (78, "empty: empty; put at least 5 images of 'empty' in it"),
    "too few usable": (78, "espresso: 3 usable images (3 unreadable skipped), needs at least 5"),
    "stray file": (78, "notes.txt: a file where a label folder is expected"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_dataset_is_one_line_and_an_exit_status(case: str, tmp_path: Path, capsys) -> None:
    dataset = _bad_dataset(tmp_path, case)
    result = run_cli(capsys, "train", str(dataset), "--output", str(tmp_path / "out"))
    code, text = BAD[case]
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pi-infer: error: "), result.stderr
    assert text in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.system
@pytest.mark.parametrize("case", ["missing", "one label"])  # a usage error (2), a dataset's (78)
def test_a_bad_dataset_ends_the_process_with_one_line(case: str, tmp_path: Path) -> None:
    dataset = _bad_dataset(tmp_path, case)
    result = pi_infer("train", str(dataset), "--output", str(tmp_path / "out"))
    code, text = BAD[case]
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pi-infer: error: "), result.stderr
    assert text in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["a file", "a foreign folder"])
def test_an_output_that_must_not_be_replaced_is_refused(case: str, tmp_path: Path,
                                                        capsys) -> None:
    dataset = _bad_dataset(tmp_path, "good")
    output = tmp_path / "out"
    if case == "a file":
        output.write_text("mine")
    else:
        output.mkdir()
        (output / "holiday.jpg").write_text("mine")
    result = run_cli(capsys, "train", str(dataset), "--output", str(output))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"--output {output}" in result.stderr
    assert (output.read_text() if case == "a file" else
            (output / "holiday.jpg").read_text()) == "mine"
