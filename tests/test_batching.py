"""The dynamic batcher: own results per caller, bounded delay, isolated failures, draining shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time

import numpy as np
import pytest

from app.serving.batching import DynamicBatcher
from tests.conftest import make_settings, synthetic_digits, template_image


class Recorder:
    """A fake model: output row = input row * 10 + 1; remembers each batch size it ran."""

    def __init__(self, delay: float = 0.0):
        self.batch_sizes: list[int] = []
        self.delay = delay

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if np.isnan(batch).any():
            raise ValueError("NaN in batch")
        self.batch_sizes.append(len(batch))
        time.sleep(self.delay)
        return batch * 10 + 1


def test_each_caller_gets_its_own_rows_from_one_batch():
    recorder = Recorder()

    async def scenario():
        batcher = DynamicBatcher(recorder, "m", max_batch_size=64, max_delay_ms=50)
        inputs = [np.full((i % 3 + 1, 2), i, dtype=np.float32) for i in range(10)]
        outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        await batcher.close()
        return inputs, outputs

    inputs, outputs = asyncio.run(scenario())
    for given, got in zip(inputs, outputs, strict=True):
        assert got.shape == given.shape
        assert np.array_equal(got, given * 10 + 1)
    assert recorder.batch_sizes == [sum(len(x) for x in inputs)]  # one model call for all ten


def test_batches_are_capped_at_max_batch_size():
    recorder = Recorder()

    async def scenario():
        batcher = DynamicBatcher(recorder, "m", max_batch_size=4, max_delay_ms=50)
        await asyncio.gather(*(batcher.submit(np.ones((1, 2), np.float32)) for _ in range(10)))
        await batcher.close()

    asyncio.run(scenario())
    assert recorder.batch_sizes == [4, 4, 2]


def test_a_lone_request_waits_no_longer_than_the_delay():
    async def scenario():
        batcher = DynamicBatcher(Recorder(), "m", max_batch_size=64, max_delay_ms=30)
        started = time.perf_counter()
        await batcher.submit(np.ones((1, 2), np.float32))
        elapsed = time.perf_counter() - started
        await batcher.close()
        return elapsed

    elapsed = asyncio.run(scenario())
    assert 0.025 <= elapsed < 0.2


def test_a_failing_item_fails_alone():
    recorder = Recorder()

    async def scenario():
        batcher = DynamicBatcher(recorder, "m", max_batch_size=64, max_delay_ms=30)
        good, bad = np.ones((1, 2), np.float32), np.full((1, 2), np.nan, np.float32)
        results = await asyncio.gather(batcher.submit(good), batcher.submit(bad), batcher.submit(good * 2),
                                       return_exceptions=True)
        await batcher.close()
        return results

    first, second, third = asyncio.run(scenario())
    assert np.array_equal(first, [[11, 11]]) and np.array_equal(third, [[21, 21]])
    assert isinstance(second, ValueError)


def test_shutdown_answers_everything_queued():
    recorder = Recorder(delay=0.02)

    async def scenario():
        batcher = DynamicBatcher(recorder, "m", max_batch_size=2, max_delay_ms=5)
        tasks = [asyncio.create_task(batcher.submit(np.full((1, 1), i, np.float32))) for i in range(7)]
        await asyncio.sleep(0)  # let them queue
        await batcher.close()
        with pytest.raises(RuntimeError, match="shut down"):
            await batcher.submit(np.ones((1, 1), np.float32))
        return [task.result() for task in tasks]

    results = asyncio.run(scenario())
    assert [float(r[0, 0]) for r in results] == [i * 10 + 1 for i in range(7)]


def test_structured_outputs_are_split_per_caller():
    def two_heads(batch):
        return {"a": batch[:, :1], "b": (batch.sum(axis=1), batch * 0)}

    async def scenario():
        batcher = DynamicBatcher(two_heads, "m", max_batch_size=8, max_delay_ms=20)
        out = await asyncio.gather(*(batcher.submit(np.full((1, 3), i, np.float32)) for i in range(3)))
        await batcher.close()
        return out

    outputs = asyncio.run(scenario())
    assert [float(o["a"][0, 0]) for o in outputs] == [0, 1, 2]
    assert [float(o["b"][0][0]) for o in outputs] == [0, 3, 6]


def test_batched_and_unbatched_outputs_agree(trained_settings):
    from app.store.layout import version_dir
    from app.store.store import load_version

    path = version_dir(trained_settings.MODEL_DIR, "digits", 1)
    plain = load_version(path, "/CPU:0")
    batched = load_version(path, "/CPU:0", lambda name, own: (16, 20.0))
    x, _ = synthetic_digits(12)

    async def scenario():
        rows = await asyncio.gather(*(batched.infer(x[i : i + 1]) for i in range(12)))
        await batched.batcher.close()
        return np.concatenate(rows)

    together = asyncio.run(scenario())
    alone = np.concatenate([asyncio.run(plain.infer(x[i : i + 1])) for i in range(12)])
    assert np.allclose(together, alone, atol=1e-5)


def test_a_manifest_brings_its_own_batching_and_an_override_wins(tmp_path, trained_settings):
    from pydantic import ValidationError

    from app.store.layout import version_dir
    from app.store.store import load_version

    path = tmp_path / "models" / "digits" / "1"
    shutil.copytree(version_dir(trained_settings.MODEL_DIR, "digits", 1), path)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "batching": {"max_batch_size": 4, "max_in_flight": 2}}))

    def batcher(**settings):
        loaded = load_version(path, "/CPU:0", make_settings(tmp_path, **settings).batching_for)
        return loaded.batcher and (loaded.batcher.max_batch_size, loaded.batcher.max_delay, loaded.batcher.max_in_flight)

    assert batcher() == (4, 0.002, 2)  # the manifest's, and the MAX_DELAY_MS setting
    assert batcher(BATCHING_OVERRIDES={"digits": {"max_batch_size": 8}}) == (8, 0.002, 2)
    assert batcher(BATCHING=False) is None
    (path / "manifest.json").write_text(json.dumps({**manifest, "batching": {"max_batch": 4}}))
    with pytest.raises(ValueError, match="max_batch"):  # a misspelt key refuses the version
        batcher()
    with pytest.raises(ValidationError, match="max_in_flight"):
        make_settings(tmp_path, BATCHING_OVERRIDES={"digits": {"max_in_flight": 0}})


def test_batching_overrides_are_read_from_the_environment(monkeypatch):
    from pydantic import ValidationError

    from app.config import Settings

    monkeypatch.setenv("BATCHING_OVERRIDES", '{"imagenet": {"max_batch_size": 8, "max_delay_ms": 10}}')
    assert Settings().batching_for("imagenet") == (8, 10.0, 4)
    monkeypatch.setenv("BATCHING_OVERRIDES", '{"imagenet": {"max_batch": 8}}')
    with pytest.raises(ValidationError, match="max_batch"):  # a misspelt key stops start-up
        Settings()


def test_metrics_count_requests_and_batches(client):
    def count(text: str) -> float:
        for line in text.splitlines():
            if line.startswith('labnets_requests_total{endpoint="/classify",model="digits",status="200"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count(client.get("/metrics").text)
    for _ in range(3):
        client.post("/classify?model=digits", files={"file": ("a.png", template_image(2))})
    text = client.get("/metrics").text
    assert count(text) == before + 3
    assert 'labnets_batch_rows_count{model="digits"}' in text
    assert 'labnets_model_load_seconds{model="digits",version="1"}' in text


def test_prepare_runs_on_the_batch_thread_and_a_bad_input_fails_alone():
    recorder = Recorder()
    threads = []

    def parse(text: str) -> np.ndarray:
        threads.append(threading.current_thread())
        return np.array([[float(text)]], np.float32)  # "oops" raises ValueError

    async def scenario():
        batcher = DynamicBatcher(recorder, "m", max_batch_size=64, max_delay_ms=30)
        results = await asyncio.gather(*(batcher.submit(t, parse, rows=1) for t in ("1", "oops", "3")),
                                       return_exceptions=True)
        await batcher.close()
        return results

    one, bad, three = asyncio.run(scenario())
    assert float(one[0, 0]) == 11 and float(three[0, 0]) == 31
    assert isinstance(bad, ValueError)
    assert recorder.batch_sizes == [2]  # the two good inputs still ran as one batch
    assert threads and all(t is not threading.main_thread() for t in threads)


def test_compiled_top_k_ranks_like_a_full_sort():
    import keras

    from app.serving.runtime import CompiledModel

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(50, use_bias=False)(inputs))
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    full = CompiledModel(model, [4], "float32", "/CPU:0")(x)
    scores, ids = CompiledModel(model, [4], "float32", "/CPU:0", top_k=7)(x)
    assert ids.shape == (3, 7)
    assert (ids == np.argsort(-full, axis=1)[:, :7]).all()
    assert np.allclose(scores, np.take_along_axis(full, ids, axis=1))


def test_compiled_max_rows_runs_a_large_batch_in_pieces_with_the_same_answers():
    import keras

    from app.serving.runtime import CompiledModel

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(6)(inputs))
    x = np.random.default_rng(1).normal(size=(11, 4)).astype(np.float32)
    whole = CompiledModel(model, [4], "float32", "/CPU:0")(x)
    pieces = CompiledModel(model, [4], "float32", "/CPU:0", max_rows=4)
    seen = []
    run = pieces._run
    pieces._run = lambda batch: seen.append(len(batch)) or run(batch)
    assert np.allclose(pieces(x), whole, atol=1e-6) and seen == [4, 4, 3]
    scores, ids = CompiledModel(model, [4], "float32", "/CPU:0", top_k=2, max_rows=5)(x)  # structured outputs too
    assert ids.shape == (11, 2) and (ids == np.argsort(-whole, axis=1)[:, :2]).all()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and two CPUs")
def test_pinned_event_loop_thread_passes_its_cpu_to_the_threads_it_starts():
    from app.serving.affinity import pin_python_threads

    allowed = sorted(os.sched_getaffinity(0))
    seen: dict[str, object] = {}

    def event_loop_thread() -> None:
        seen["off"] = pin_python_threads(-1), os.sched_getaffinity(0)
        seen["cpu"] = pin_python_threads(1)
        seen["own"] = os.sched_getaffinity(0)
        child = threading.Thread(target=lambda: seen.setdefault("child", os.sched_getaffinity(0)))
        child.start()
        child.join()

    thread = threading.Thread(target=event_loop_thread)
    thread.start()
    thread.join()
    assert seen["off"] == (None, set(allowed))
    assert seen["cpu"] == allowed[1] and seen["own"] == {allowed[1]} and seen["child"] == {allowed[1]}
    assert os.sched_getaffinity(0) == set(allowed)  # the caller's own thread is untouched


class ParseMany:
    """A `prepare` that can take several requests at once: records how it was called."""

    calls: list[list[str]] = []

    def __eq__(self, other: object) -> bool:  # every instance is the same preparation
        return isinstance(other, ParseMany)

    def __call__(self, text: str) -> np.ndarray:
        ParseMany.calls.append([text])
        return np.array([[float(text)]], np.float32)

    def many(self, texts: list[str]) -> list[np.ndarray | Exception]:
        if "crash" in texts:
            raise RuntimeError("many failed")  # the batcher then prepares one by one
        ParseMany.calls.append(list(texts))
        return [ValueError(f"bad {t}") if t == "oops" else np.array([[float(t)]], np.float32) for t in texts]


@pytest.mark.parametrize(("texts", "calls"), [
    (("1", "oops", "3"), [["1", "oops", "3"]]),  # one call for the whole batch; the bad one fails alone
    (("1", "crash", "3"), [["1"], ["crash"], ["3"]]),  # `many` failed: one by one, only "crash" fails
])
def test_equal_prepares_run_together_and_a_bad_input_still_fails_alone(texts, calls):
    recorder = Recorder()
    ParseMany.calls = []

    async def scenario():
        batcher = DynamicBatcher(recorder, "m", max_batch_size=64, max_delay_ms=30)
        results = await asyncio.gather(*(batcher.submit(t, ParseMany(), rows=1) for t in texts), return_exceptions=True)
        await batcher.close()
        return results

    first, bad, last = asyncio.run(scenario())
    assert float(first[0, 0]) == 11 and float(last[0, 0]) == 31
    assert isinstance(bad, ValueError)
    assert ParseMany.calls == calls and recorder.batch_sizes == [2]


def test_the_uploads_of_several_requests_are_prepared_together_as_each_alone():
    from PIL import Image

    from app.api.uploads import UploadPreparer
    from app.errors import BadInput, TooLarge
    from tests.conftest import png_bytes

    preparer = UploadPreparer({"kind": "mnist_digit"}, 30_000)
    digits = [template_image(d) for d in (1, 7)]
    blank = png_bytes(Image.new("L", (28, 28), 128))
    huge = png_bytes(Image.new("L", (200, 200), 0))  # over 30,000 pixels
    big_digit = png_bytes(Image.fromarray(np.kron(np.asarray(Image.open(__import__("io").BytesIO(digits[1]))),
                                                  np.ones((3, 3), np.uint8))))  # 84x84: another size
    photo = png_bytes(Image.fromarray(np.kron(np.asarray(Image.open(__import__("io").BytesIO(digits[0]))),
                                              np.ones((5, 5), np.uint8))))  # 140x140: prepared alone
    requests = [[("file 1", digits[0])], [("file 1", digits[1]), ("file 2", blank)], [("file 1", huge)],
                [("file 1", big_digit), ("file 2", digits[0]), ("file 3", photo)],
                [("file 1", blank), ("file 2", b"not an image")]]
    results = UploadPreparer.many(preparer, requests)
    assert np.array_equal(results[0], preparer(requests[0])) and results[0].shape == (1, 28, 28)
    assert isinstance(results[1], BadInput) and results[1].detail.startswith("file 2: no digit found")
    assert isinstance(results[2], TooLarge)
    assert np.array_equal(results[3], preparer(requests[3])) and results[3].shape == (3, 28, 28)
    assert np.array_equal(results[3][2], preparer([("file 1", photo)])[0])
    # the first bad file in upload order answers, whichever step found it
    assert isinstance(results[4], BadInput) and results[4].detail.startswith("file 1: no digit found")


def test_an_unexpected_failure_while_preparing_answers_every_caller_instead_of_hanging():
    class Broken:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("cannot compare")

        def __call__(self, text: str) -> np.ndarray:
            return np.array([[1.0]], np.float32)

    async def scenario():
        batcher = DynamicBatcher(Recorder(), "m", max_batch_size=64, max_delay_ms=30)
        results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(t, Broken(), rows=1) for t in "ab"),
                                                        return_exceptions=True), timeout=5)
        await batcher.close()
        return results

    assert [str(r) for r in asyncio.run(scenario())] == ["cannot compare", "cannot compare"]


def test_metrics_label_requests_with_the_model_that_served_them(client):
    """The label was the first `model` of the query string: "" when the route's default served the
    request, and the first of a repeated parameter where the last one is served."""

    def counts(text: str) -> dict[tuple[str, str], float]:
        prefix = 'labnets_requests_total{endpoint="/classify",model="'
        rows = [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]
        return {(row.split('"')[0], row.split('status="')[1].split('"')[0]): float(row.rsplit(" ", 1)[1])
                for row in rows}

    upload = {"file": ("a.png", template_image(2))}
    before = counts(client.get("/metrics").text)
    assert client.post("/classify", files=upload).status_code == 200  # the default model
    assert client.post("/classify?model=zzz&model=digits", files=upload).status_code == 200  # the last one
    assert client.post("/classify?model=digits&model=zzz", files=upload).status_code == 404
    assert client.post("/classify?k=0", files=upload).status_code == 422  # refused before a model was chosen
    text = client.get("/metrics").text
    after = counts(text)
    added = {key: after[key] - before.get(key, 0.0) for key in after if after[key] != before.get(key, 0.0)}
    assert added == {("digits", "200"): 2, ("other", "404"): 1, ("", "422"): 1}
    assert 'model="zzz"' not in text  # an unknown name from the query makes no label of its own
