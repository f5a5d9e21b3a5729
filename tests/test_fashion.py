"""The fashion CNN: idx reader, .deb extraction, folder loader and split, training, metrics, serving."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from app.errors import BadInput
from app.main import create_app
from app.preprocessing.fashion import prepare_fashion_item
from app.preprocessing.resized import prepare_resized
from app.runs import registry
from app.runs.db import open_registry
from app.store.manifest import read_manifest
from app.store.store import load_version
from tests.conftest import make_settings, png_bytes
from training import fashion
from training.classification import classification_report
from training.fashion import LABELS, list_image_folder, load_image_folder, read_idx, split_indices, train, train_on
from training.sources import archive_members

CLASSES = ("circles", "squares", "stripes")
PER_CLASS = 40


# --- idx files and the .deb they come in ---------------------------------------------------

def idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_read_idx_images_and_labels_plain_and_gzipped(tmp_path):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    labels = np.array([9, 0, 4], dtype=np.uint8)
    (tmp_path / "images-idx3-ubyte").write_bytes(idx_bytes(images, 0x08))
    (tmp_path / "labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, 0x08)))
    assert np.array_equal(read_idx(tmp_path / "images-idx3-ubyte"), images)
    read = read_idx(tmp_path / "labels-idx1-ubyte.gz")
    assert read.shape == (3,) and read.tolist() == [9, 0, 4]


def test_read_idx_big_endian_wider_types(tmp_path):
    values = np.array([[1.5, -2.25], [1e6, 0.0]], dtype=np.float32)
    (tmp_path / "floats.idx").write_bytes(idx_bytes(values, 0x0D))
    assert np.array_equal(read_idx(tmp_path / "floats.idx"), values)


def test_read_idx_refuses_other_files_and_truncation(tmp_path):
    (tmp_path / "not.idx").write_bytes(b"PK\x03\x04 hello")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "not.idx")
    (tmp_path / "short.idx").write_bytes(idx_bytes(np.zeros((2, 3), np.uint8), 0x08)[:-1])
    with pytest.raises(ValueError, match=r"needs 6 bytes of data, found 5"):
        read_idx(tmp_path / "short.idx")


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    """A Debian-style `ar` archive: the global header, then 60-byte member headers, 2-byte aligned."""
    out = b"!<arch>\n"
    for name, data in members:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        assert len(header) == 60
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return out


def tar_xz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_deb_extraction_yields_the_idx_files(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    inner = "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
    payload = gzip.compress(idx_bytes(labels, 0x08))
    deb = tmp_path / "dataset-fashion-mnist_0.0~git_all.deb"
    deb.write_bytes(ar_archive([
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", tar_xz({"./control": b"Package: dataset-fashion-mnist\n"})),
        ("data.tar.xz", tar_xz({f"./{inner}": payload, "./usr/share/doc/copyright": b"MIT"})),
    ]))
    members = archive_members(deb)
    assert set(members) == {inner, "usr/share/doc/copyright"}
    assert members[inner] == payload
    (tmp_path / "labels.gz").write_bytes(members[inner])
    assert read_idx(tmp_path / "labels.gz").tolist() == [3, 1, 4, 1, 5]


# --- a folder of images ----------------------------------------------------------------------

def shape_image(kind: str, rng: np.random.Generator) -> Image.Image:
    """Distinct synthetic classes, in varied sizes so the loader has to resize them."""
    width, height = int(rng.integers(24, 48)), int(rng.integers(24, 48))
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 40, 3)))
    draw = ImageDraw.Draw(image)
    if kind == "circles":
        draw.ellipse([4, 4, width - 4, height - 4], fill=(230, 40, 40))
    elif kind == "squares":
        draw.rectangle([6, 6, width - 6, height - 6], fill=(40, 230, 40))
    else:
        for x in range(0, width, 6):
            draw.rectangle([x, 0, x + 2, height], fill=(40, 40, 230))
    return image


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (root / kind).mkdir()
        for index in range(PER_CLASS):
            shape_image(kind, rng).save(root / kind / f"{index:03d}.{'jpg' if index % 2 else 'png'}")
    (root / "circles" / "notes.txt").write_text("not an image, skipped")
    return root


def test_folder_listing_names_classes_by_sorted_sub_folder(image_folder):
    classes, files = list_image_folder(image_folder)
    assert classes == list(CLASSES)
    assert len(files) == 3 * PER_CLASS
    assert {label for path, label in files if path.parent.name == "stripes"} == {2}


def test_folder_without_classes_is_refused(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(SystemExit, match="at least two sub-folders"):
        list_image_folder(tmp_path)


def test_split_is_stratified_disjoint_and_fixed_by_seed():
    labels = np.repeat(np.arange(3), 40)
    train_idx, val_idx, test_idx = split_indices(labels, (0.2, 0.25), seed=5)
    assert [np.bincount(labels[part]).tolist() for part in (train_idx, val_idx, test_idx)] == [
        [22, 22, 22], [8, 8, 8], [10, 10, 10]]
    assert len(np.union1d(np.union1d(train_idx, val_idx), test_idx)) == 120
    again = split_indices(labels, (0.2, 0.25), seed=5)
    assert all(np.array_equal(a, b) for a, b in zip((train_idx, val_idx, test_idx), again, strict=True))
    assert not np.array_equal(split_indices(labels, (0.2, 0.25), seed=6)[1], val_idx)


def test_folder_loader_resizes_and_splits(image_folder):
    data, classes, digest = load_image_folder(image_folder, 16, "rgb", (0.2, 0.2), seed=1)
    assert classes == list(CLASSES) and len(digest) == 16
    assert {k: len(v[0]) for k, v in data.items()} == {"train": 72, "validation": 24, "test": 24}
    x, y = data["train"]
    assert x.shape == (72, 16, 16, 3) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert np.bincount(y).tolist() == [24, 24, 24]
    gray, _, _ = load_image_folder(image_folder, 12, "grayscale", (0.2, 0.2), seed=1)
    assert gray["test"][0].shape == (24, 12, 12, 1)


def folder_args(image_folder: Path, **overrides) -> argparse.Namespace:
    values = dict(data_dir=image_folder, name="shapes", image_size=16, colour_mode="rgb", validation_fraction=0.2,
                  test_fraction=0.2, epochs=1, batch_size=16, learning_rate=3e-3, width=4, convolutions="1,1",
                  dense_units=16, dropout=0.0, label_smoothing=0.0, max_shift=1, flip=True, flip_average=False, single_view_of=None, patience=3,
                  plateau_patience=2, bf16=False, limit=None, seed=3, resume=False, quiet=True)
    return argparse.Namespace(**{**values, **overrides})


@pytest.fixture(scope="module")
def folder_store(image_folder, tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("store"))
    version = train(folder_args(image_folder), settings)
    return settings, version


def test_one_epoch_on_a_folder_publishes_a_servable_model(folder_store):
    settings, version = folder_store
    manifest = read_manifest(settings.MODEL_DIR / "shapes" / str(version))
    assert version == 1 and manifest.task == "classify" and manifest.labels == list(CLASSES)
    assert manifest.preprocessing == {"kind": "resized", "size": 16, "colour_mode": "rgb"}
    assert manifest.input_spec.shape == [16, 16, 3]
    metrics = manifest.test_metrics
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == metrics["test_size"] == 24
    assert metrics["test_accuracy"] == pytest.approx(np.trace(matrix) / 24)
    assert [metrics["per_class"][name]["support"] for name in CLASSES] == [8, 8, 8]
    assert metrics["macro_f1"] == pytest.approx(np.mean([metrics["per_class"][n]["f1"] for n in CLASSES]), abs=1e-3)
    record = json.loads((settings.MODEL_DIR / "shapes" / "1" / "run.json").read_text())
    assert len(record["history"]) == 1 and {"loss", "val_loss", "accuracy", "learning_rate"} <= set(record["history"][0])
    assert record["dataset"] == f"folder:{Path(record['params']['data_dir']).name}"
    assert set(record["plots"]) == {"accuracy.png", "confusion_matrix.png", "loss.png"}


def test_the_folder_model_answers_on_classify_with_class_names(folder_store, image_folder):
    settings, _ = folder_store
    photo = image_folder / "squares" / "001.jpg"
    with TestClient(create_app(settings)) as client:
        response = client.post("/classify?model=shapes&k=2", files={"file": ("square.jpg", photo.read_bytes())})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "shapes" and len(body["top"]) == 2 and body["label"] in CLASSES
        model = client.app.state.store.get("shapes").compiled.model
        expected = model(prepare_resized(Image.open(photo), 16, "rgb")[None], training=False).numpy()[0]
        assert body["top"][0]["label"] == CLASSES[int(expected.argmax())]
        assert body["top"][0]["probability"] == pytest.approx(float(expected.max()), abs=1e-5)
        run_id = client.get("/models").json()["data"][0]["run_id"]
        plot = client.get(f"/runs/{run_id}/plots/confusion_matrix.png")
        assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"


# --- Fashion-MNIST-style serving -------------------------------------------------------------

def product_photo(dark_on_white: bool = True, size=(300, 400), box=(90, 60, 190, 340)) -> Image.Image:
    """A 'trouser' (tall rectangle with a gap) photographed on a plain background."""
    background, item = (255, 60) if dark_on_white else (0, 195)
    image = Image.new("L", size, background)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = box
    draw.rectangle(box, fill=item)
    draw.rectangle([(left + right) // 2 - 6, top + 120, (left + right) // 2 + 6, bottom], fill=background)
    return image.convert("RGB")


def test_fashion_item_is_inverted_cropped_and_fills_the_frame():
    prepared = prepare_fashion_item(product_photo())
    assert prepared.shape == (28, 28, 1) and prepared.dtype == np.float32
    item = prepared[..., 0]
    assert item[0, 0] == 0.0 and np.median(item[item > 0.5]) == pytest.approx(195 / 255, abs=0.02)  # not stretched
    rows, cols = np.nonzero(item > 0.05)
    assert rows.min() == 0 and rows.max() == 27  # the long side fills the frame
    assert 9 <= cols.max() - cols.min() + 1 <= 12 and abs((cols.min() + cols.max()) / 2 - 13.5) <= 1
    assert np.allclose(prepare_fashion_item(product_photo(dark_on_white=False)), prepared, atol=1e-6)
    moved = prepare_fashion_item(product_photo(size=(600, 500), box=(400, 100, 500, 380)))
    assert np.allclose(moved, prepared, atol=1e-6)


def test_a_blank_photo_is_refused():
    with pytest.raises(BadInput, match="no item found"):
        prepare_fashion_item(Image.new("RGB", (50, 50), (250, 250, 250)))


def synthetic_fashion(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    templates = np.random.default_rng(11).random((10, 28, 28, 1)) > 0.7
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    return templates[labels].astype(np.float32) * 0.8 + rng.random((count, 28, 28, 1)).astype(np.float32) * 0.2, labels


@pytest.fixture(scope="module")
def fashion_store(tmp_path_factory):
    """A tiny model published as `fashion`, prepared like Fashion-MNIST, trained on synthetic data."""
    settings = make_settings(tmp_path_factory.mktemp("fashion"))
    data = {"train": synthetic_fashion(200, 1), "validation": synthetic_fashion(40, 2), "test": synthetic_fashion(50, 3)}
    args = folder_args(None, name="fashion", convolutions="1", flip_average=True)
    train_on(data, LABELS, args, settings, dataset="synthetic", data_fingerprint="test",
             preprocessing={"kind": "fashion_item"}, description="tiny")
    return settings, data


def test_a_fashion_model_serves_product_photos(fashion_store):
    settings, _ = fashion_store
    upload = png_bytes(product_photo())
    with TestClient(create_app(settings)) as client:
        body = client.post("/classify?model=fashion", files={"file": ("trousers.png", upload)}).json()
        assert body["label"] in LABELS and len(body["top"]) == 10
        assert sum(entry["probability"] for entry in body["top"]) == pytest.approx(1.0, abs=1e-4)
        model = client.app.state.store.get("fashion").compiled.model
        expected = model(prepare_fashion_item(product_photo())[None], training=False).numpy()[0]
        assert body["label"] == LABELS[int(expected.argmax())]
        blank = client.post("/classify?model=fashion", files={"file": ("blank.png", png_bytes(np.full((9, 9), 255, np.uint8)))})
        assert blank.status_code == 422 and "no item found" in blank.json()["detail"]


# --- metrics -----------------------------------------------------------------------------------

def test_classification_report_numbers():
    truth = np.array([0, 0, 1, 1, 2])
    predicted = np.eye(3)[[0, 1, 1, 1, 0]]
    report = classification_report(truth, predicted, ["a", "b", "c"])
    assert report["test_accuracy"] == pytest.approx(0.6)
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert report["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert report["per_class"]["b"] == {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2}
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_a_single_view_version_is_the_network_inside_the_flip_average(fashion_store, tmp_path, monkeypatch):
    settings, data = fashion_store
    copy = make_settings(tmp_path)
    shutil.copytree(settings.MODEL_DIR / "fashion", copy.MODEL_DIR / "fashion")
    monkeypatch.setattr(fashion, "load_fashion_mnist", lambda settings, seed=0: data)
    args = folder_args(None, name="fashion", single_view_of=1)
    assert train(args, copy) == 2
    averaged = load_version(copy.MODEL_DIR / "fashion" / "1", "/CPU:0").compiled.model
    single = load_version(copy.MODEL_DIR / "fashion" / "2", "/CPU:0").compiled.model
    x = data["test"][0][:8]
    mirrored = x[:, :, ::-1]
    one, other = single(x, training=False).numpy(), single(mirrored, training=False).numpy()
    assert np.allclose(averaged(x, training=False).numpy(), (one + other) / 2, atol=1e-5)
    manifest = read_manifest(copy.MODEL_DIR / "fashion" / "2")
    expected = float((single(data["test"][0], training=False).numpy().argmax(1) == data["test"][1]).mean())
    assert manifest.test_metrics["test_accuracy"] == pytest.approx(expected)
    record = json.loads((copy.MODEL_DIR / "fashion" / "2" / "run.json").read_text())
    assert record["params"]["single_view_of"] == 1 and record["plots"] == ["confusion_matrix.png"]
    with pytest.raises(SystemExit, match="already a single view"):
        train(folder_args(None, name="fashion", single_view_of=2), copy)


def test_evaluate_reports_and_stores_the_metrics(fashion_store, monkeypatch):
    settings, data = fashion_store
    monkeypatch.setattr(fashion, "load_fashion_mnist", lambda settings, seed=0: data)
    metrics = fashion.evaluate(settings, None)
    assert metrics["model"] == "fashion" and metrics["version"] == 1 and metrics["test_size"] == 50
    assert set(metrics["per_class"]) == set(LABELS)
    assert np.array(metrics["confusion_matrix"]).sum() == 50
    manifest = read_manifest(settings.MODEL_DIR / "fashion" / "1")
    assert metrics["test_accuracy"] == pytest.approx(manifest.test_metrics["test_accuracy"])
    assert metrics["confusion_matrix_url"] == f"/runs/{manifest.run_id}/plots/confusion_matrix.png"
    assert (settings.MODEL_DIR / "fashion" / "1" / "plots" / "confusion_matrix.png").is_file()
    with open_registry(settings.database_url)() as session:
        stored = registry.get_run(session, manifest.run_id).test_metrics["evaluation"]
    assert stored["macro_f1"] == pytest.approx(metrics["macro_f1"])


def test_flip_average_without_flips_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="drop --no-flip"):
        train(folder_args(None, flip=False, flip_average=True), make_settings(tmp_path))
