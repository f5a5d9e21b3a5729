"""The ImageNet port: the legacy checkpoint reader, the Keras network, the served classifier."""

from __future__ import annotations

import io
import pickle
import shutil
import struct

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api.uploads import UploadPreparer
from app.config import REPO_ROOT, get_settings
from app.errors import BadInput
from app.main import create_app
from app.preprocessing import prepare_image, shrunk_size
from app.preprocessing.imagenet import prepare_imagenet
from app.preprocessing.images import decode_image
from app.store.layout import complete_versions
from tests.conftest import make_settings, png_bytes
from training.efficientnet_lite import _keras_weights, _torch_prefix, blocks, efficientnet_lite0, load_torch_weights
from training.imagenet import PREPROCESSING as IMAGENET_PREPROCESSING
from training.imagenet import read_labels
from training.sources import EFFICIENTNET_LITE0
from training.torch_checkpoint import CheckpointError, read_state_dict

# --- a legacy-format checkpoint, written opcode by opcode -----------------------------------


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _ints(values: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(_int(v) for v in values) + b"t"


def _tensor(storage_class: str, key: str, numel: int, offset: int, size: tuple[int, ...],
            stride: tuple[int, ...], rebuild: tuple[str, str] = ("torch._utils", "_rebuild_tensor_v2")) -> bytes:
    persistent_id = (b"(" + _text("storage") + _global("torch", storage_class) + _text(key) + _text("cpu")
                     + _int(numel) + b"N" + b"t" + b"Q")
    hooks = _global("collections", "OrderedDict") + b")R"
    return (_global(*rebuild) + b"(" + persistent_id + _int(offset) + _ints(size) + _ints(stride)
            + b"\x89" + hooks + b"t" + b"R")


def _state_dict_pickle(entries: list[tuple[str, bytes]], container: tuple[str, str] = ("collections", "OrderedDict")) -> bytes:
    body = b"".join(_text(name) + tensor for name, tensor in entries)
    return b"\x80\x02" + _global(*container) + b")R" + b"(" + body + b"u" + b"."


def legacy_file(state_pickle: bytes, storages: list[tuple[str, np.ndarray]]) -> bytes:
    """Magic number, protocol, system info, state dict, storage keys, then each storage's bytes."""
    header = b"".join(pickle.dumps(value, protocol=2) for value in (
        0x1950A86A20F9469CFC6C, 1001,
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}},
    ))
    keys = pickle.dumps([key for key, _ in storages], protocol=2)
    data = b"".join(struct.pack("<q", array.size) + array.tobytes() for _, array in storages)
    return header + state_pickle + keys + data


FLOATS = np.arange(10, dtype=np.float32) * 0.5
TINY_STATE = _state_dict_pickle([
    ("conv.weight", _tensor("FloatStorage", "0", 10, 0, (2, 3), (3, 1))),
    ("conv.weight_t", _tensor("FloatStorage", "0", 10, 0, (3, 2), (1, 3))),  # a transposed view
    ("bn.bias", _tensor("FloatStorage", "0", 10, 6, (4,), (1,))),  # offset into the same storage
    ("bn.num_batches_tracked", _tensor("LongStorage", "1", 1, 0, (), ())),
])
TINY_FILE = legacy_file(TINY_STATE, [("0", FLOATS), ("1", np.array([7], dtype="<i8"))])


def test_reader_rebuilds_tensors_views_offsets_and_scalars():
    state = read_state_dict(TINY_FILE)
    assert list(state) == ["conv.weight", "conv.weight_t", "bn.bias", "bn.num_batches_tracked"]
    assert state["conv.weight"].dtype == np.float32
    np.testing.assert_array_equal(state["conv.weight"], [[0.0, 0.5, 1.0], [1.5, 2.0, 2.5]])
    np.testing.assert_array_equal(state["conv.weight_t"], state["conv.weight"].T)
    np.testing.assert_array_equal(state["bn.bias"], [3.0, 3.5, 4.0, 4.5])
    assert state["bn.num_batches_tracked"].shape == () and int(state["bn.num_batches_tracked"]) == 7


@pytest.mark.parametrize("forbidden", [("os", "system"), ("builtins", "eval"), ("torch.nn", "Module"),
                                       ("torch._utils", "_rebuild_tensor"), ("numpy", "ndarray")])
def test_reader_refuses_any_other_class(forbidden):
    as_container = legacy_file(_state_dict_pickle([], container=forbidden), [])
    as_rebuild = legacy_file(
        _state_dict_pickle([("w", _tensor("FloatStorage", "0", 10, 0, (10,), (1,), rebuild=forbidden))]),
        [("0", FLOATS)])
    for data in (as_container, as_rebuild):
        with pytest.raises(pickle.UnpicklingError, match=f"refused to load {forbidden[0]}.{forbidden[1]}"):
            read_state_dict(data)


def test_reader_refuses_broken_files():
    with pytest.raises(CheckpointError, match="magic number"):
        read_state_dict(pickle.dumps(123, protocol=2) + TINY_FILE)
    with pytest.raises(CheckpointError, match="zip-based"):
        read_state_dict(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(CheckpointError, match="ends inside storage"):
        read_state_dict(TINY_FILE[:-3])
    wrong_count = legacy_file(TINY_STATE, [("0", FLOATS[:9]), ("1", np.array([7], dtype="<i8"))])
    with pytest.raises(CheckpointError, match="holds 9 elements"):
        read_state_dict(wrong_count)
    past_end = legacy_file(_state_dict_pickle([("w", _tensor("FloatStorage", "0", 10, 8, (4,), (1,)))]),
                           [("0", FLOATS)])
    with pytest.raises(CheckpointError, match="past the end"):
        read_state_dict(past_end)


# --- the Keras network ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def network():
    return efficientnet_lite0()


def test_network_layer_shapes(network):
    assert network.count_params() == 4_694_024
    shape = lambda name: tuple(network.get_layer(name).output.shape[1:])  # noqa: E731
    assert shape("stem_relu6") == (112, 112, 32)
    assert len(blocks()) == 16 and sum(b.residual for b in blocks()) == 9
    ends = {0: (112, 112, 16), 2: (56, 56, 24), 4: (28, 28, 40), 7: (14, 14, 80), 10: (14, 14, 112),
            14: (7, 7, 192), 15: (7, 7, 320)}
    for index, expected in ends.items():
        assert shape(blocks()[index].output_layer) == expected
    assert shape("block1_expand_relu6") == (112, 112, 96)  # expansion 6 before the stride
    assert network.get_layer("block3_depthwise_conv").kernel.shape == (5, 5, 144, 1)  # 24 x 6, kernel 5
    assert shape("head_relu6") == (7, 7, 1280) and shape("probabilities") == (1000,)
    assert all(layer.epsilon == 1e-3 for layer in network.layers if hasattr(layer, "epsilon"))
    assert all(layer.padding == "same" for layer in network.layers if hasattr(layer, "padding"))
    assert "block0_expand_conv" not in [layer.name for layer in network.layers]


def test_torch_layouts_are_transposed_into_keras_layouts(network):
    rng = np.random.default_rng(0)
    state = {}
    for layer in network.layers:  # a random state dict in PyTorch layouts
        prefix = _torch_prefix(layer.name)
        if prefix is None or not layer.weights:
            continue
        shapes = [tuple(w.shape) for w in layer.weights]
        if len(shapes) == 4:
            for key, size in zip(("weight", "bias", "running_mean", "running_var"), shapes, strict=True):
                state[f"{prefix}.{key}"] = rng.random(size).astype(np.float32)
        elif "depthwise" in layer.name:
            h, w, c, _ = shapes[0]
            state[f"{prefix}.weight"] = rng.random((c, 1, h, w)).astype(np.float32)
        elif layer.name == "logits":
            state[f"{prefix}.weight"] = rng.random(shapes[0][::-1]).astype(np.float32)
            state[f"{prefix}.bias"] = rng.random(shapes[1]).astype(np.float32)
        else:
            h, w, i, o = shapes[0]
            state[f"{prefix}.weight"] = rng.random((o, i, h, w)).astype(np.float32)
    assert load_torch_weights(network, state) == []
    stem = network.get_layer("stem_conv").get_weights()[0]
    assert stem[2, 1, 0, 5] == state["_conv_stem.weight"][5, 0, 2, 1]
    depthwise = network.get_layer("block4_depthwise_conv").get_weights()[0]
    assert depthwise[4, 0, 17, 0] == state["_blocks.4._depthwise_conv.weight"][17, 0, 4, 0]
    np.testing.assert_array_equal(network.get_layer("logits").get_weights()[0], state["_fc.weight"].T)
    np.testing.assert_array_equal(network.get_layer("block9_project_bn").get_weights()[3],
                                  state["_blocks.9._bn2.running_var"])
    state["_blocks.9._bn2.running_var"] = state["_blocks.9._bn2.running_var"][:-1]
    with pytest.raises(ValueError, match="block9_project_bn"):
        load_torch_weights(network, state)


def test_labels_are_readable_unique_and_in_model_order(tmp_path):
    (tmp_path / "ids.txt").write_text("n02012849\nn01440764\nn03126707\n")
    (tmp_path / "lemmas.txt").write_text("n01440764\ttench, Tinca tinca\nn02012849\tcrane\n"
                                         "n03126707\tcrane\nn00000001\tunused\n")
    assert read_labels(tmp_path / "ids.txt", tmp_path / "lemmas.txt") == [
        "crane (n02012849)", "tench", "crane (n03126707)"]


def test_preparation_keeps_aspect_and_crops_the_centre():
    image = Image.new("RGB", (512, 256), (255, 0, 0))
    image.paste((0, 255, 0), (128, 0, 384, 256))  # the central half is green
    prepared = prepare_imagenet(image)
    assert prepared.shape == (224, 224, 3) and prepared.dtype == np.float32
    np.testing.assert_allclose(prepared[:, :, 1], (255 - 127) / 128, atol=0.02)
    np.testing.assert_allclose(prepared[:, :, 0], -127 / 128, atol=0.02)
    assert prepare_imagenet(Image.new("L", (3, 5), 127)).shape == (224, 224, 3)


def test_preparation_resamples_only_the_crop_as_resizing_the_whole_would():
    """The crop's pixels equal resizing the whole image then cropping (to one grey level), and an
    image of extreme shape is never enlarged whole: 1 x 100,000 would become 256 x 25,600,000."""
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8))
    whole = photo.resize((341, 256), Image.BICUBIC).crop((58, 16, 282, 240))
    np.testing.assert_allclose(prepare_imagenet(photo), (np.asarray(whole, np.float32) - 127) / 128, atol=1 / 128)
    from skimage import data  # a photo enlarged (shorter side under 256): the other branch of the grid

    cat = Image.fromarray(data.chelsea()).resize((200, 133), Image.BICUBIC)
    whole = cat.resize((385, 256), Image.BICUBIC).crop((80, 16, 304, 240))
    np.testing.assert_allclose(prepare_imagenet(cat), (np.asarray(whole, np.float32) - 127) / 128, atol=1 / 128)
    line = Image.new("L", (1, 100_000), 30)
    line.paste(200, (0, 49_990, 1, 50_010))  # light in the middle only
    prepared = prepare_imagenet(line)  # the crop covers the central 0.9 of the 100,000 pixels
    assert prepared.shape == (224, 224, 3)
    np.testing.assert_allclose(prepared, (200 - 127) / 128, atol=1 / 128)


def large_photo(fmt: str = "JPEG", **save: object) -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.coffee()).resize((4032, 3024), Image.LANCZOS).save(buffer, fmt, **save)
    return buffer.getvalue()


def test_a_large_jpeg_is_decoded_smaller_and_prepared_as_in_full():
    """A 4032 x 3024 photo decodes at a quarter of its size, still twice what the crop needs
    each way, and its prepared input is the full decode's to a few grey levels."""
    photo = large_photo()
    shrinks_to = shrunk_size(IMAGENET_PREPROCESSING)
    assert shrinks_to((4032, 3024)) == (342, 256)
    small, full = decode_image(photo, 40_000_000, "photo", shrinks_to), decode_image(photo, 40_000_000, "photo")
    assert small.size == (1008, 756) and full.size == (4032, 3024)
    difference = np.abs(prepare_image(small, IMAGENET_PREPROCESSING) - prepare_image(full, IMAGENET_PREPROCESSING))
    assert difference.max() <= 4 / 128 and difference.mean() < 0.5 / 128
    resized = shrunk_size({"kind": "resized", "size": 32, "colour_mode": "rgb"})  # a folder model's
    assert decode_image(photo, 40_000_000, "photo", resized).size == (504, 378)
    assert shrunk_size({"kind": "mnist_digit"}) is None  # finding the strokes needs every pixel
    png = png_bytes(Image.open(io.BytesIO(photo)).resize((1200, 900)))  # only JPEG decodes smaller
    assert decode_image(png, 40_000_000, "photo", shrinks_to).size == (1200, 900)
    with pytest.raises(BadInput, match="truncated"):  # decoding smaller still checks the whole file
        decode_image(photo[: len(photo) // 2], 40_000_000, "photo", shrinks_to)


def test_uploads_for_imagenet_decode_smaller_with_their_rotation_and_multi_picture_jpegs_too():
    """The upload path decodes smaller (its preparer passes the preparation's size), an EXIF
    rotation still turns the photo, and a phone's multi-picture JPEG (MPO) is read as its photo."""
    preparer = UploadPreparer(IMAGENET_PREPROCESSING, 40_000_000)
    full = prepare_image(decode_image(large_photo(), 40_000_000, "photo"), IMAGENET_PREPROCESSING)
    (rows,) = preparer.many([[("photo", large_photo())]])
    assert rows.shape == (1, 224, 224, 3) and np.abs(rows[0] - full).max() <= 4 / 128
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 270° to view
    (turned,) = preparer.many([[("photo", large_photo(exif=exif))]])
    np.testing.assert_allclose(turned[0], np.rot90(full, -1), atol=4 / 128)
    second = Image.new("RGB", (640, 480), (255, 0, 0))
    (mpo,) = preparer.many([[("photo", large_photo("MPO", save_all=True, append_images=[second]))]])
    assert not isinstance(mpo, Exception) and np.abs(mpo[0] - full).max() <= 4 / 128


# --- the shipped model, served ------------------------------------------------------------------

def _shipped_version_dir():
    versions = complete_versions(REPO_ROOT / "models", "imagenet")
    if not versions:
        pytest.skip("no shipped imagenet model; run `python -m training imagenet`")
    return REPO_ROOT / "models" / "imagenet" / str(versions[-1])


@pytest.fixture(scope="module")
def imagenet_client(tmp_path_factory):
    shipped = _shipped_version_dir()
    settings = make_settings(tmp_path_factory.mktemp("imagenet"))
    shutil.copytree(shipped, settings.MODEL_DIR / "imagenet" / shipped.name)
    with TestClient(create_app(settings)) as client:
        yield client


def _classify(client, data: bytes, query: str = "", name: str = "photo.png"):
    return client.post(f"/classify?model=imagenet{query}", files={"file": (name, data, "image/png")})


def test_served_model_labels_the_sample_photos(imagenet_client):
    from skimage import data

    cat = _classify(imagenet_client, png_bytes(data.chelsea()), name="chelsea.png")
    assert cat.status_code == 200, cat.text
    body = cat.json()
    assert body["label"] in {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
    assert len(body["top"]) == 5 and sum(entry["probability"] for entry in body["top"]) > 0.9
    coffee = _classify(imagenet_client, png_bytes(data.coffee(), "JPEG"), name="coffee.jpg").json()
    assert coffee["label"] in {"espresso", "cup"} and coffee["top"][0]["probability"] > 0.5


def test_served_model_reports_labels_and_input(imagenet_client):
    entry = next(m for m in imagenet_client.get("/models").json()["data"] if m["name"] == "imagenet")
    assert entry["task"] == "classify" and len(entry["labels"]) == 1000 == len(set(entry["labels"]))
    assert entry["labels"][281] == "tabby" and entry["labels"][967] == "espresso"
    assert entry["input_spec"]["shape"] == [224, 224, 3]
    assert entry["batching"] == {"max_batch_size": 4, "max_delay_ms": 5.0, "max_in_flight": 2}  # its manifest's
    assert entry["test_metrics"]["reference_max_relative_error"] < 1e-5


def test_endpoint_bad_inputs(imagenet_client):
    photo = png_bytes(np.full((40, 60, 3), 128, np.uint8))
    assert len(_classify(imagenet_client, photo, "&k=12").json()["top"]) == 12
    assert _classify(imagenet_client, photo, "&k=101").status_code == 422
    assert _classify(imagenet_client, photo, "&k=0").status_code == 422
    not_image = _classify(imagenet_client, b"this is not an image")
    assert not_image.status_code == 422 and "not an image" in not_image.json()["detail"]
    assert _classify(imagenet_client, b"").status_code == 422
    assert _classify(imagenet_client, photo, "&version=99").status_code == 404
    truncated = png_bytes(np.zeros((300, 300, 3), np.uint8), "JPEG")[:200]
    assert _classify(imagenet_client, truncated).status_code == 422
    rgba = png_bytes(np.zeros((10, 10, 4), np.uint8))
    assert _classify(imagenet_client, rgba).status_code == 200


def test_shipped_weights_are_the_checkpoint(imagenet_client):
    """The committed model.keras holds exactly what the reader reads from the pinned .pth."""
    weights = get_settings().DATA_DIR / "sources" / EFFICIENTNET_LITE0.name / EFFICIENTNET_LITE0.files[0].path
    if not weights.is_file():
        pytest.skip("the EfficientNet-Lite0 weights are not fetched (`python -m training fetch imagenet`)")
    state = read_state_dict(weights)
    model = imagenet_client.app.state.store.get("imagenet").compiled.model
    for layer in model.layers:
        prefix = _torch_prefix(layer.name)
        if prefix and layer.weights:
            for ours, theirs in zip(layer.get_weights(), _keras_weights(layer, prefix, state), strict=True):
                np.testing.assert_array_equal(ours, theirs)
