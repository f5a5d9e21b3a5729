"""The ECG autoencoder: data split, threshold rule, a tiny model that separates synthetic beats, /anomaly."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import event, given, settings
from hypothesis import strategies as st

from app.main import create_app
from app.preprocessing.records import (
    denormalise_records,
    fit_standardisation,
    normalise_records,
    reconstruction_errors,
)
from app.store.manifest import read_manifest
from tests.conftest import make_settings
from training.ecg import read_ucr_tsv, stratified_split, train_on
from training.thresholds import (
    binary_metrics,
    max_accuracy_threshold,
    normal_percentile_threshold,
    roc_auc,
    threshold_table,
)

LENGTH = 140
TIME = np.linspace(0.0, 1.0, LENGTH)


def normal_beats(count: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth wave and a bump, jittered in phase and amplitude, plus a little noise; offset like raw data."""
    shift = rng.normal(0.0, 0.02, (count, 1))
    amplitude = 1.0 + rng.normal(0.0, 0.05, (count, 1))
    wave = np.sin(2 * np.pi * (TIME - shift)) + 2.0 * np.exp(-(((TIME - 0.3 - shift) / 0.05) ** 2))
    return (amplitude * wave + 0.5 + rng.normal(0.0, 0.03, (count, LENGTH))).astype(np.float32)


def spiky_beats(count: int, rng: np.random.Generator) -> np.ndarray:
    beats = normal_beats(count, rng)
    for beat in beats:
        beat[rng.choice(LENGTH, 4, replace=False)] += rng.choice([-4.0, 4.0], 4)
    return beats


def flat_beats(count: int, rng: np.random.Generator) -> np.ndarray:
    level = rng.normal(0.5, 0.3, (count, 1))
    return (level + rng.normal(0.0, 0.03, (count, LENGTH))).astype(np.float32)


def synthetic_split(normal: int, anomalous: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Records and ECG5000-style classes: 1 normal, 2 spiky, 3 flat."""
    rng = np.random.default_rng(seed)
    half = anomalous // 2
    records = np.concatenate([normal_beats(normal, rng), spiky_beats(half, rng), flat_beats(anomalous - half, rng)])
    classes = np.repeat([1, 2, 3], [normal, half, anomalous - half])
    return records, classes


def ecg_args(**overrides) -> argparse.Namespace:
    values = dict(architecture="dense", units=[32], latent=8, epochs=15, batch_size=16, learning_rate=3e-3,
                  seed=3, resume=False, quiet=True)
    return argparse.Namespace(**{**values, **overrides})


@pytest.fixture(scope="module")
def ecg_settings(tmp_path_factory):
    """A store holding a tiny ECG autoencoder trained on synthetic beats, with small request limits."""
    settings = make_settings(tmp_path_factory.mktemp("ecg"), MAX_RECORDS_PER_REQUEST=20, MAX_RECORDS_BYTES=60_000)
    data = {"train": synthetic_split(240, 40, 1), "validation": synthetic_split(60, 60, 2),
            "test": synthetic_split(60, 60, 3)}
    train_on(data, ecg_args(), settings, dataset="synthetic", data_fingerprint="test")
    return settings


@pytest.fixture(scope="module")
def ecg_client(ecg_settings):
    with TestClient(create_app(ecg_settings)) as client:
        yield client


@pytest.fixture(scope="module")
def manifest(ecg_settings):
    return read_manifest(ecg_settings.MODEL_DIR / "ecg" / "1")


# -- data and the threshold rule ---------------------------------------------------------------

def test_stratified_split_keeps_class_proportions_and_is_disjoint():
    classes = np.repeat([1, 2, 3], [600, 300, 100])
    parts = stratified_split(classes, {"train": 0.6, "validation": 0.2, "test": 0.2}, seed=5)
    assert [len(parts[name]) for name in ("train", "validation", "test")] == [600, 200, 200]
    assert np.bincount(classes[parts["test"]]).tolist() == [0, 120, 60, 20]
    assert len(np.unique(np.concatenate(list(parts.values())))) == 1000
    again = stratified_split(classes, {"train": 0.6, "validation": 0.2, "test": 0.2}, seed=5)
    assert all(np.array_equal(parts[name], again[name]) for name in parts)


def test_read_ucr_tsv(tmp_path):
    path = tmp_path / "beats.tsv"
    path.write_text("1\t0.5\t-1.25\n3\t2\t0\n")
    records, classes = read_ucr_tsv(path)
    assert classes.tolist() == [1, 3] and records.tolist() == [[0.5, -1.25], [2.0, 0.0]]


def test_max_accuracy_threshold_on_exact_numbers():
    assert max_accuracy_threshold(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1])) == pytest.approx(0.25)
    # 1.5 and 3.5 both give 0.75 accuracy; the middle tied candidate (of two: the second) wins.
    assert max_accuracy_threshold(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 1, 0, 1])) == 3.5
    # One noisy normal at 0.9 does not drag the threshold above the anomalies at 0.5 and 0.6.
    scores, labels = np.array([0.1, 0.2, 0.9, 0.5, 0.6]), np.array([0, 0, 0, 1, 1])
    assert max_accuracy_threshold(scores, labels) == pytest.approx(0.35)


def test_percentile_auc_and_metrics_on_exact_numbers():
    assert normal_percentile_threshold(np.arange(1.0, 102.0), np.r_[np.zeros(100), 1], 95) == pytest.approx(95.05)
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert roc_auc(np.array([1.0, 1.0]), np.array([0, 1])) == 0.5
    metrics = binary_metrics(np.array([0.1, 0.6, 0.7, 0.2, 0.9]), np.array([0, 1, 0, 1, 1]), 0.5)
    assert metrics == {"accuracy": 0.6, "precision": 2 / 3, "recall": 2 / 3, "f1": pytest.approx(2 / 3)}
    [row] = threshold_table((np.array([0.1, 0.9]), np.array([0, 1])), None, {"rule": 0.5})
    assert row == {"rule": "rule", "threshold": 0.5, "validation_accuracy": 1.0, "validation_precision": 1.0,
                   "validation_recall": 1.0, "validation_f1": 1.0}


def test_normalisation_is_one_invertible_function():
    records = np.array([[1.0, 3.0], [5.0, 7.0]])
    constants = fit_standardisation(records)
    assert constants == {"kind": "standardise", "mean": 4.0, "std": pytest.approx(np.sqrt(5.0))}
    normalised = normalise_records(records, constants)
    assert normalised.dtype == np.float32 and abs(normalised.mean()) < 1e-7
    assert np.allclose(denormalise_records(normalised, constants), records, atol=1e-6)
    assert reconstruction_errors(np.array([[0.0, 0.0]]), np.array([[1.0, 3.0]])).tolist() == [5.0]


# -- the tiny model --------------------------------------------------------------------------

def test_tiny_autoencoder_separates_spikes_and_flat_lines(manifest):
    metrics = manifest.test_metrics
    assert metrics["roc_auc"] >= 0.95 and metrics["accuracy"] >= 0.9, metrics
    assert manifest.task == "anomaly" and manifest.input_spec.shape == [LENGTH]
    extra = manifest.model_extra
    assert extra["threshold"] > 0 and extra["threshold_rule"]["rule"] == "max_validation_accuracy"
    assert [row["rule"] for row in extra["threshold_table"]][0] == "max_validation_accuracy"
    assert manifest.preprocessing["kind"] == "standardise" and manifest.preprocessing["mean"] == pytest.approx(0.5, abs=0.2)


def test_run_records_epochs_and_plots(ecg_client):
    run = ecg_client.get("/runs?model=ecg").json()["data"][0]
    assert [row["epoch"] for row in run["history"]] == list(range(1, 16))
    assert {"loss", "val_loss", "mae"} <= set(run["history"][0])
    assert run["history"][-1]["loss"] < run["history"][0]["loss"]
    assert set(run["plots"]) == {"loss.png", "threshold_sweep.png", "error_histogram.png", "reconstructions.png"}
    png = ecg_client.get(f"/runs/{run['id']}/plots/error_histogram.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


# -- the endpoint ----------------------------------------------------------------------------

def expected_errors(client, records: np.ndarray) -> np.ndarray:
    loaded = client.app.state.store.get("ecg")
    inputs = normalise_records(records, loaded.manifest.preprocessing)
    return reconstruction_errors(inputs, loaded.compiled.model(inputs, training=False).numpy())


def test_one_record_scores_like_the_model(ecg_client, manifest):
    record = normal_beats(1, np.random.default_rng(10))[0]
    response = ecg_client.post("/anomaly", json={"record": record.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "ecg" and body["version"] == 1 and body["count"] == 1
    assert body["threshold"] == manifest.model_extra["threshold"] and body["threshold_source"] == "model"
    assert body["threshold_rule"] == "max_validation_accuracy"
    [result] = body["results"]
    assert result["error"] == pytest.approx(expected_errors(ecg_client, record[None])[0], rel=1e-5)
    assert result["error_ratio"] == pytest.approx(result["error"] / body["threshold"])
    assert result["is_anomaly"] is False and "reconstruction" not in result


def test_a_batch_flags_the_anomalies_in_order(ecg_client):
    rng = np.random.default_rng(11)
    records = np.concatenate([normal_beats(3, rng), spiky_beats(2, rng), flat_beats(2, rng)])
    body = ecg_client.post("/anomaly", json={"records": records.tolist()}).json()
    assert body["count"] == 7 and [r["index"] for r in body["results"]] == list(range(7))
    assert [r["is_anomaly"] for r in body["results"]] == [False] * 3 + [True] * 4
    assert body["anomalies"] == 4
    errors = [r["error"] for r in body["results"]]
    assert np.allclose(errors, expected_errors(ecg_client, records), rtol=1e-5)
    bare = ecg_client.post("/anomaly", json=records.tolist()).json()  # a bare array of records
    assert [r["error"] for r in bare["results"]] == errors


def test_csv_upload_and_csv_body_score_like_json(ecg_client):
    records = np.concatenate([normal_beats(2, np.random.default_rng(12)), flat_beats(1, np.random.default_rng(13))])
    as_json = ecg_client.post("/anomaly", json={"records": records.tolist()}).json()
    lines = [",".join(repr(float(v)) for v in row) for row in records]
    csv_text = "\n".join([lines[0], "", *lines[1:]]) + "\n"  # a blank line is skipped
    upload = ecg_client.post("/anomaly", files={"file": ("beats.csv", csv_text.encode(), "text/csv")})
    assert upload.status_code == 200, upload.text
    tabbed = csv_text.replace(",", "\t").encode()
    body = ecg_client.post("/anomaly", content=tabbed, headers={"content-type": "text/csv"})
    for response in (upload.json(), body.json()):
        assert response["count"] == 3
        assert [r["error"] for r in response["results"]] == pytest.approx([r["error"] for r in as_json["results"]])
        assert [r["is_anomaly"] for r in response["results"]] == [False, False, True]


def test_threshold_override_and_reconstruction(ecg_client):
    record = spiky_beats(1, np.random.default_rng(14))[0]
    body = ecg_client.post("/anomaly?threshold=1000&reconstruction=true", json={"record": record.tolist()}).json()
    [result] = body["results"]
    assert body["threshold"] == 1000 and body["threshold_source"] == "request"
    assert result["is_anomaly"] is False and result["error_ratio"] == pytest.approx(result["error"] / 1000)
    loaded = ecg_client.app.state.store.get("ecg")
    inputs = normalise_records(record[None], loaded.manifest.preprocessing)
    rebuilt = denormalise_records(loaded.compiled.model(inputs, training=False).numpy(), loaded.manifest.preprocessing)
    assert len(result["reconstruction"]) == LENGTH and np.allclose(result["reconstruction"], rebuilt[0], atol=1e-4)


# -- bad input -------------------------------------------------------------------------------

GOOD = [0.5] * LENGTH


def assert_error(response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert words in response.json()["detail"], response.json()["detail"]


def raw_json(client, text: str, query: str = ""):
    return client.post(f"/anomaly{query}", content=text.encode(), headers={"content-type": "application/json"})


def record_text(position: int, literal: str) -> str:
    values = [json.dumps(v) for v in GOOD]
    values[position] = literal
    return "[" + ", ".join(values) + "]"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"record": [1, 2, 3]}', "record has 3 values; expected 140"),
        ('{"records": [' + json.dumps(GOOD) + ', [1, 2]]}', "records[1] has 2 values; expected 140"),
        ('{"records": [' + json.dumps(GOOD) + ", " + record_text(17, "NaN") + "]}", "records[1][17]: NaN is not allowed"),
        ('{"record": ' + record_text(3, "Infinity") + "}", "record[3]: Infinity is not allowed"),
        ('{"record": ' + record_text(4, "-Infinity") + "}", "record[4]: Infinity is not allowed"),
        ('{"record": ' + record_text(5, "1e400") + "}", "record[5]: Infinity is not allowed"),
        ('{"record": ' + record_text(0, "1" + "0" * 400) + "}", "record[0]: Infinity is not allowed"),
        ('{"record": ' + record_text(6, '"1.5"') + "}", 'record[6]: "1.5" is not a number'),
        ('{"record": ' + record_text(7, "true") + "}", "record[7]: true is not a number"),
        ('{"record": ' + record_text(8, "null") + "}", "record[8]: null is not a number"),
        ('{"records": [' + json.dumps(GOOD) + ', "beat"]}', 'records[1] is "beat", not a list of 140 numbers'),
        ('{"records": []}', "empty batch"),
        ("[]", "empty batch"),
        ('{"record": "abc"}', '"record" must be a list'),
        ('{"beats": []}', 'either "records"'),
        ("42", "must be an object"),
        ('{"record": [1, 2', "not valid JSON"),
        ('{"record": [' + "9" * 5000 + "]}", "not valid JSON"),
        ('{"record": [' + "[" * 30_000, "not valid JSON"),
        ("", "not valid JSON"),
    ],
    ids=["short", "batch-short", "nan", "inf", "neg-inf", "overflow", "big-int", "string", "bool", "null",
         "not-a-list", "empty-batch", "empty-array", "record-not-list", "no-key", "scalar", "truncated", "huge-int", "deep-nesting", "empty"],
)
def test_bad_json_is_422_naming_the_record(ecg_client, text, words):
    assert_error(raw_json(ecg_client, text), 422, words)
    assert ecg_client.post("/anomaly", json={"record": GOOD}).status_code == 200  # still serving


def csv_upload(client, data: bytes):
    return client.post("/anomaly", files={"file": ("beats.csv", data, "text/csv")})


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "the CSV holds no records"),
        (b"\n\n", "the CSV holds no records"),
        (("t" + ",t" * 139 + "\n").encode(), "line 1, column 1: \"t\" is not a number (no header row"),
        ((",".join(["0.5"] * 140) + "\n" + ",".join(["0.5"] * 139) + "\n").encode(), "line 2 has 139 values"),
        ((",".join(["0.5"] * 139 + ["nan"]) + "\n").encode(), "line 1, column 140: NaN is not allowed"),
        ((",".join(["0.5"] * 139 + ["-inf"]) + "\n").encode(), "line 1, column 140: Infinity is not allowed"),
        ((",".join(["0.5"] * 139 + [""]) + "\n").encode(), "line 1, column 140: empty cell"),
        ((",".join(["0.5"] * 139 + ['"1']) + "\n").encode(), "malformed CSV at line 1"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (("\t".join(["1"] + ["0.5"] * 140) + "\n").encode(), "line 1 has 141 values; expected 140"),
        ((",".join(["0.5"] * 139 + ["1_0"]) + "\n").encode(), 'column 140: "1_0" is not a number written in ASCII'),
        ((",".join(["0.5"] * 139 + ["\u0661"]) + "\n").encode(), "is not a number written in ASCII digits"),
    ],
    ids=["empty", "blank-lines", "header", "short-row", "nan", "inf", "empty-cell", "open-quote", "binary",
         "class-column", "underscore", "other-digits"],
)
def test_bad_csv_is_422_naming_the_line(ecg_client, data, words):
    assert_error(csv_upload(ecg_client, data), 422, words)


def test_multipart_without_a_csv_file_is_422(ecg_client):
    assert_error(ecg_client.post("/anomaly", data={"note": "x"}, files={"other": ("a.csv", b"1")}), 422,
                 "send one CSV file in the 'file' field (got 0)")
    two = [("file", ("a.csv", b"1", "text/csv")), ("file", ("b.csv", b"2", "text/csv"))]
    assert_error(ecg_client.post("/anomaly", files=two), 422, "(got 2)")
    as_text = ecg_client.post("/anomaly", data={"file": "0.1,0.2"}, files={"other": ("a.csv", b"1")})
    assert_error(as_text, 422, "the 'file' part has no filename, so it is a text field, not a file")


def test_too_many_records_and_too_large_bodies_are_413(ecg_client):
    assert_error(ecg_client.post("/anomaly", json={"records": [GOOD] * 21}), 413, "21 records in one request; the limit is 20")
    csv_rows = ("\n".join([",".join(["0.5"] * LENGTH)] * 21) + "\n").encode()
    assert_error(csv_upload(ecg_client, csv_rows), 413, "the limit is 20")
    huge = b'{"record": [' + b"0.5," * 20_000 + b"0.5]}"
    assert_error(raw_json(ecg_client, huge.decode()), 413, "over the limit of 60000 bytes")
    assert_error(csv_upload(ecg_client, b"0.5," * 20_000), 413, "over the limit of 60000 bytes")
    assert ecg_client.post("/anomaly", json={"records": [GOOD] * 20}).json()["count"] == 20


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("?threshold=nan", 422, "threshold"),
        ("?threshold=inf", 422, "threshold"),
        ("?threshold=0", 422, "threshold"),
        ("?threshold=-1", 422, "threshold"),
        ("?threshold=1e-320", 422, "query.threshold: Input should be greater than or equal to 0.000000000001"),
        ("?model=nope", 404, "unknown model 'nope'"),
        ("?version=9", 404, "no version 9"),
    ],
)
def test_bad_parameters(ecg_client, query, status, words):
    assert_error(ecg_client.post(f"/anomaly{query}", json={"record": GOOD}), status, words)


def test_values_too_large_to_score_are_422_not_null_scores(ecg_client):
    """Finite values past float32's range (1e39) would be scored as infinity, which JSON answers as null."""
    huge = [1e39] * LENGTH
    assert_error(ecg_client.post("/anomaly", json={"records": [GOOD, huge]}), 422,
                 "the record at index 1 cannot be scored")
    assert_error(csv_upload(ecg_client, ",".join(["1e39"] * LENGTH).encode()), 422, "index 0 cannot be scored")
    body = ecg_client.post("/anomaly?threshold=1e-12", json={"record": [1e6] * LENGTH}).json()
    assert all(np.isfinite([r["error"], r["error_ratio"]]).all() for r in body["results"])


def test_unsupported_content_type_is_415(ecg_client):
    response = ecg_client.post("/anomaly", content=b"<beat/>", headers={"content-type": "application/xml"})
    assert_error(response, 415, "content type 'application/xml'")


def test_openapi_documents_json_and_csv_bodies(ecg_client):
    body = ecg_client.get("/openapi.json").json()["paths"]["/anomaly"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "text/csv"} <= set(body)


def test_csv_reader_is_the_same_for_upload_and_body():
    from app.api.records import parse_csv_records

    rows = parse_csv_records(io.BytesIO(b"1,2\n\n3,4\n").getvalue(), 2, 10)
    assert rows.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_the_benchmark_baseline_reads_records_exactly_like_anomaly(ecg_settings):
    """Its throughput is what /anomaly is measured against, so it must do the same reading work."""
    settings = ecg_settings.model_copy(update={"BENCHMARK_BASELINES": True})
    with TestClient(create_app(settings)) as client:
        body = {"records": [GOOD, GOOD, GOOD]}
        assert client.post("/baseline/records", json=body).json() == {"model": "baseline", "count": 3}
        for query, payload in (("?threshold=0", body), ("", {"record": GOOD[:-1]}), ("", {"record": [*GOOD[:-1], "x"]})):
            model, baseline = client.post(f"/anomaly{query}", json=payload), client.post(f"/baseline/records{query}", json=payload)
            assert model.status_code == baseline.status_code == 422
            assert model.json()["detail"] == baseline.json()["detail"]
        metrics = client.get("/metrics").text  # a baseline serves no model: its requests say so
        assert 'labnets_requests_total{endpoint="/baseline/records",model="",status="200"}' in metrics
        assert 'endpoint="/baseline/records",model="ecg"' not in metrics


def test_a_compressed_body_is_415_naming_its_encoding(ecg_client):
    """Nothing decompresses a request body: /anomaly read gzip as text ("not valid JSON: 'utf-8'
    codec can't decode byte 0x8b") and took a 'br'-labelled plain body as it was."""
    records = json.dumps({"record": normal_beats(1, np.random.default_rng(10))[0].tolist()}).encode()
    for encoding, body in (("gzip", gzip.compress(records)), ("br", records)):
        response = ecg_client.post("/anomaly", content=body, headers={"Content-Type": "application/json",
                                                                       "Content-Encoding": encoding})
        assert_error(response, 415, f"Content-Encoding '{encoding}' is not supported: send the body uncompressed")
    plain = {"Content-Type": "application/json", "Content-Encoding": "identity"}
    assert ecg_client.post("/anomaly", content=records, headers=plain).status_code == 200
    assert ecg_client.get("/health", headers={"Content-Encoding": "gzip"}).status_code == 200  # no body


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"1,2\n,\n3,4\n", "line 2, column 1: empty cell"),
        (b'1,2\n"",""\n3,4\n', "line 2, column 1: empty cell"),
        (b"1,2\n , \n3,4\n", "line 2, column 1: empty cell"),
        (b"1\t2\n\t\n3\t4\n", "line 2, column 1: empty cell"),
        (b"1,2\n,,\n", "line 2 has 3 values; expected 2"),
    ],
    ids=["separator", "quoted-empties", "spaced-separator", "tab", "wider"],
)
def test_a_line_of_empty_cells_is_422_not_skipped(data, words):
    """Skipping it moved every later record up one index: a verdict answered for the wrong record."""
    from app.api.records import parse_csv_records
    from app.errors import BadInput

    with pytest.raises(BadInput, match=words):
        parse_csv_records(data, 2, 10)


def test_only_lines_of_whitespace_are_skipped():
    from app.api.records import parse_csv_records

    assert parse_csv_records(b"\n1,2\n   \n\t\r\n3,4\n\n", 2, 10).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert parse_csv_records(b"1\t2\n \n3\t4\n", 2, 10).tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_a_csv_line_of_separators_is_422_naming_it(ecg_client):
    line = ",".join(["0.5"] * LENGTH)
    data = f"{line}\n{',' * (LENGTH - 1)}\n{line}\n".encode()
    assert_error(ecg_client.post("/anomaly", content=data, headers={"content-type": "text/csv"}), 422,
                 "line 2, column 1: empty cell")


# -- the plain CSV reader (numpy) against the cell-by-cell one ---------------------------------

def plain_variants(rows: np.ndarray) -> dict[str, bytes]:
    """One set of records written the ways a client may: every form the numpy reader takes."""
    lines = [",".join(repr(float(v)) for v in row) for row in rows]
    return {
        "lf": ("\n".join(lines) + "\n").encode(),
        "crlf": "\r\n".join(lines).encode(),
        "cr": "\r".join(lines).encode(),
        "bom": b"\xef\xbb\xbf" + "\n".join(lines).encode(),
        "tabs": "\n".join(line.replace(",", "\t") for line in lines).encode(),
        "spaces": "\n".join(line.replace(",", " , ") for line in lines).encode(),
        "empty-lines": ("\n\n" + "\n\n".join(lines) + "\n\n").encode(),
    }


def test_plain_csv_is_read_by_numpy_not_cell_by_cell(monkeypatch):
    """The cell-by-cell reader cost about 150 ms of interpreter time for 1,000 records of 140 values."""
    import app.api.records as records

    rows = np.random.default_rng(20).normal(0, 3, (30, 7)).round(6)

    def cell_by_cell(*args):
        raise AssertionError("a plain CSV was read cell by cell")

    monkeypatch.setattr(records, "_cell_by_cell_rows", cell_by_cell)
    monkeypatch.setattr(records, "CSV_BLOCK_CHARACTERS", 100)  # several blocks, one line or two each
    for name, data in plain_variants(rows).items():
        assert records.parse_csv_records(data, 7, 30).tobytes() == rows.tobytes(), name
    with pytest.raises(records.TooLarge, match="over 29 records in one request; the limit is 29"):
        records.parse_csv_records(plain_variants(rows)["lf"], 7, 29)


def test_plain_csv_reading_costs_a_fraction_of_cell_by_cell():
    from app.api.records import _cell_by_cell_rows, parse_csv_records

    lines = [",".join(f"{v:.8f}" for v in row) for row in np.random.default_rng(21).normal(0, 2, (300, 140))]
    data = "\n".join(lines).encode()

    def cpu_seconds(read) -> float:
        times = []
        for _ in range(3):
            started = time.process_time()
            read()
            times.append(time.process_time() - started)
        return min(times)

    plain = cpu_seconds(lambda: parse_csv_records(data, 140, 300))
    by_cell = cpu_seconds(lambda: _cell_by_cell_rows(data.decode(), ",", 140, 300))
    assert plain < by_cell / 2, (plain, by_cell)  # measured: about 27 ms against 120 for 1,000 records


def test_line_blocks_end_at_line_ends_and_cover_the_text():
    from app.api.records import _line_blocks

    text = "1,2\n33,44\n5,6\n7"
    assert list(_line_blocks(text, 4)) == ["1,2\n33,44\n", "5,6\n7"]
    assert "".join(_line_blocks(text, 1)) == text and list(_line_blocks("", 4)) == []


GOOD_CELLS = ["1", "-2.5", "+.5", "5.", "1E3", "-0", "0.1", "1e-5", "4.9e-324", " 3 ", "\t7", "12345678901234567890"]
BAD_CELLS = ["1e999", "", "e", "1e", "--1", ".", "1.2.3", "1 2", "+", "nan", "-inf", "1_0", "0x10", "\u0661", "\"1\""]
PLAIN_CELLS = st.sampled_from(GOOD_CELLS * 20 + BAD_CELLS)  # mostly records, so numpy reads some whole bodies


@st.composite
def plain_csv_bodies(draw) -> tuple[str, int]:
    """Bodies over the plain reader's characters, mostly records: rows of 1-3 cells, and now and then
    a blank or whitespace line, a line of separators, a cell too many, with every line end."""
    separator, end = draw(st.sampled_from([",", "\t"])), draw(st.sampled_from(["\n", "\r\n", "\r"]))
    width = draw(st.integers(1, 3))
    row = st.lists(PLAIN_CELLS, min_size=width, max_size=width).map(separator.join)
    odd = st.one_of(st.lists(PLAIN_CELLS, min_size=width + 1, max_size=width + 1).map(separator.join),
                    st.sampled_from(["", " ", "\t", ",", " , "]))
    lines = st.lists(st.integers(0, 7).flatmap(lambda pick: odd if pick == 0 else row), max_size=6)
    return end.join(draw(lines)) + draw(st.sampled_from(["", end])), width


@settings(max_examples=int(os.environ.get("PROPERTY_MAX_EXAMPLES", 300)), deadline=None, derandomize=True,
          database=None)
@given(body=plain_csv_bodies(), max_records=st.sampled_from([2, 10]), block=st.sampled_from([1, 8, 64 * 1024]))
def test_the_plain_reader_agrees_with_the_cell_by_cell_one(body, max_records, block):
    """Whatever numpy reads, the cell-by-cell reader reads to the same bits; it declines the rest."""
    import app.api.records as records
    from app.errors import ApiError

    text, length = body

    def outcome(read):
        try:
            rows = read(text, records._csv_delimiter(text), length, max_records)
        except ApiError as error:
            return type(error).__name__, error.detail
        return None if rows is None else rows.tobytes()

    original, records.CSV_BLOCK_CHARACTERS = records.CSV_BLOCK_CHARACTERS, block
    try:
        plain = outcome(records._plain_csv_rows)
    finally:
        records.CSV_BLOCK_CHARACTERS = original
    event("declined" if plain is None else "read by numpy")  # `--hypothesis-show-statistics` shows the mix
    if plain is not None:
        assert plain == outcome(records._cell_by_cell_rows)


def test_a_cell_over_the_csv_field_limit_is_refused_by_both_readers():
    import csv

    from app.api.records import _over_field_limit, parse_csv_records
    from app.errors import BadInput

    limit = csv.field_size_limit()
    long_line = ",".join(["1" * (limit // 2)] * 3).encode()  # over the limit, its cells within it
    assert not _over_field_limit(b"1,22\n" + long_line + b"\r\n", ",") and not _over_field_limit(b"", ",")
    assert _over_field_limit(b"1\r" + b"2" * (limit + 1), ",") and not _over_field_limit(b"2" * limit, ",")
    assert parse_csv_records(b"1,0." + b"0" * (limit - 2), 2, 10).tolist() == [[1.0, 0.0]]
    with pytest.raises(BadInput, match=r"malformed CSV at line 1: field larger than field limit"):
        parse_csv_records(b"1,0." + b"0" * (limit - 1), 2, 10)
