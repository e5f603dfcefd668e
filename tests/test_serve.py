"""`ft-kit serve` as a real process on a free loopback port: predictions, 4xx for bad input, the body limit,
concurrency, clean SIGTERM. Then the app in-process over a fake, instant classifier: the published OpenAPI schema
against hundreds of generated requests (hypothesis), 413, 415, the JSON 500 of a failing model."""
import asyncio
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
from collections import Counter
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings, strategies as st
from jsonschema import Draft202012Validator

from ft_kit.serve import NOT_BLANK, BodyLimit, ServeConfig, create_app

SERVE = "from ft_kit.cli import main; raise SystemExit(main())"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    "The packaged encoder with an untrained, seeded head, saved as a model folder (fast)."
    import torch
    from ft_kit.deploy import ModelInfo, save_model
    from ft_kit.models import load_encoder
    torch.manual_seed(0)
    m, tok = load_encoder(device="cpu")
    return save_model(m, tok, tmp_path_factory.mktemp("serve") / "model", ModelInfo(method="head"))


def call(port, path, body=None, raw=None, ctype="application/json", timeout=60):
    "One HTTP request to the server; (status, parsed JSON or text)."
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers={"Content-Type": ctype} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r: status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e: status, text = e.code, e.read().decode()
    try: return status, json.loads(text)
    except ValueError: return status, text


@pytest.fixture(scope="module")
def server(model_dir):
    "Start `ft-kit serve` as a subprocess, wait for /health, yield (process, port); stop it at the end."
    from ft_kit.serve import free_port
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "serve", str(model_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None: pytest.fail(f"server exited early:\n{proc.stdout.read()}")
        try:
            if call(port, "/health", timeout=2)[0] == 200: break
        except OSError: time.sleep(0.5)
    else:
        proc.kill(); pytest.fail("server did not answer /health within 120 s")
    yield proc, port
    if proc.poll() is None: proc.kill(); proc.wait()


def test_predict_one_and_batch(server, model_dir):
    _, port = server
    s, one = call(port, "/predict", {"text": "A wonderful film."})
    assert s == 200 and set(one) == {"label", "probs"} and one["label"] in one["probs"]
    assert abs(sum(one["probs"].values()) - 1) < 1e-6
    s, many = call(port, "/predict", {"texts": ["A wonderful film.", "Dull and far too long."]})
    assert s == 200 and len(many["predictions"]) == 2
    assert many["predictions"][0]["label"] == one["label"]
    # independent reference: the same folder loaded with plain transformers in this process, its head put by hand on
    # the mean of the token vectors (the saved model pools that way: config.json says ft_kit_pooling "mean")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    m, tok = AutoModelForSequenceClassification.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    assert m.config.ft_kit_pooling == "mean"
    with torch.no_grad():
        h = m.bert(**tok(["Dull and far too long."], return_tensors="pt")).last_hidden_state  # one text: no padding
        p = torch.softmax(m.classifier(h.mean(1)), -1)[0]
    assert abs(many["predictions"][1]["probs"]["positive"] - p[1].item()) < 1e-4


@pytest.mark.parametrize("name,kw,expect", [
    ("empty text", {"body": {"text": "   "}}, 422),
    ("too long", {"body": {"text": "x" * 2001}}, 422),
    ("too many texts", {"body": {"texts": ["a"] * 65}}, 422),
    ("empty list", {"body": {"texts": []}}, 422),
    ("wrong type", {"body": {"texts": "not a list"}}, 422),
    ("number in list", {"body": {"texts": ["a", 3]}}, 422),
    ("unknown field", {"body": {"txt": "typo"}}, 422),
    ("neither field", {"body": {}}, 422),
    ("broken JSON", {"raw": b'{"text": "oops'}, 400),
    ("JSON array", {"body": ["a", "b"]}, 422),
    ("both fields", {"body": {"text": "a", "texts": ["b"]}}, 422),
    ("null text", {"body": {"text": None}}, 422),
    ("null beside a list", {"body": {"text": None, "texts": ["a"]}}, 422),
    ("NaN", {"raw": b'{"text": NaN}'}, 400),
    ("unpaired surrogate", {"raw": b'{"text": "\\ud800"}'}, 400),
    ("not JSON", {"raw": b"hello", "ctype": "text/plain"}, 415),
    ("JSON as text/plain", {"body": {"text": "fine"}, "ctype": "text/plain"}, 415),
    ("form type (curl -d)", {"raw": b"text=fine", "ctype": "application/x-www-form-urlencoded"}, 415),
    ("body over 1 MiB", {"raw": b'{"text": "fine"}' + b" " * 2**20}, 413),
])
def test_bad_input_is_4xx_with_message(server, name, kw, expect):
    _, port = server
    status, body = call(port, "/predict", **kw)
    assert status == expect, (name, status, body)
    assert isinstance(body, dict) and body.get("error"), (name, body)


def test_chunked_body_over_the_limit_is_413_on_the_real_server(server):
    "A body without Content-Length (chunked) is counted as it arrives, refused once past 1 MiB; the server goes on."
    _, port = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    chunks = (b" " * 2**16 for _ in range(20))  # 1.25 MiB, no Content-Length: http.client sends it chunked
    conn.request("POST", "/predict", body=chunks, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    status, body = r.status, json.loads(r.read())
    conn.close()
    assert status == 413 and str(2**20) in body["error"], (status, body)
    assert call(port, "/predict", {"text": "still serving"})[0] == 200


def test_wrong_method_and_path(server):
    _, port = server
    assert call(port, "/predict")[0] == 405  # GET
    assert call(port, "/nothing-here")[0] == 404


def test_health_docs_openapi(server):
    _, port = server
    s, h = call(port, "/health")
    assert s == 200 and h["status"] == "ok" and h["labels"] == ["negative", "positive"]
    s, spec = call(port, "/openapi.json")
    assert s == 200 and {"/predict", "/health"} <= set(spec["paths"])
    assert spec["components"]["schemas"]["ManyTexts"]["properties"]["texts"]["maxItems"] == 64  # the served limits
    s, page = call(port, "/docs")
    assert s == 200 and "/predict" in page and "<script" not in page  # works offline: no CDN scripts
    assert "200, 400, 413, 415, 422, 500" in page  # the statuses /predict answers


def test_concurrent_requests(server):
    _, port = server
    texts = [f"review {i}: " + "great " * (i % 7) for i in range(24)]
    results = [None] * len(texts)
    def one(i): results[i] = call(port, "/predict", {"text": texts[i]})
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    [t.start() for t in threads]; [t.join(120) for t in threads]
    assert all(r is not None and r[0] == 200 for r in results)
    s, batch = call(port, "/predict", {"texts": texts})  # batched together or not, the answers are the same
    for r, b in zip(results, batch["predictions"]):
        assert r[1]["label"] == b["label"] and abs(r[1]["probs"]["positive"] - b["probs"]["positive"]) < 1e-4


def test_sigterm_finishes_running_request_and_exits_cleanly(server):
    proc, port = server
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", call(port, "/predict", {"texts": ["a long review " * 10] * 16})))
    t.start(); time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    t.join(60)
    code = proc.wait(timeout=30)
    log = proc.stdout.read()
    assert code == 0, log
    assert "Finished server process" in log and "Traceback" not in log
    assert "http://127.0.0.1:" in log  # bound to loopback by default
    assert box["r"][0] == 200  # the request in flight was answered


# ---------------------------------------------------------------------------------------------------------------------
# In-process: the real app over a fake, instant classifier (no model time), driven by fastapi's TestClient.

LIMITS = ServeConfig(max_texts=5, max_chars=40, max_body_bytes=1500)  # small, so generated bodies land on both sides
JSON_TYPE = {"Content-Type": "application/json"}


class FakeClassifier:
    "What `create_app` uses of a `ft_kit.deploy.Classifier` (predict, labels, backend, info.method), instant."
    labels = ["negative", "positive"]
    backend = "fake"
    info = SimpleNamespace(method="fake")

    def __init__(self, fail_on: str | None = None):  # a text containing `fail_on` makes the model raise
        self.fail_on = fail_on

    def predict(self, texts: list[str]) -> list[dict]:
        "A deterministic prediction per text (P(positive) from its length), or a RuntimeError."
        if self.fail_on and any(self.fail_on in t for t in texts): raise RuntimeError("the fake model failed")
        ps = [(len(t) % 11) / 10 for t in texts]
        return [{"label": self.labels[p > 0.5], "probs": {"negative": 1 - p, "positive": p}} for p in ps]


def validator(spec: dict, schema: dict) -> Draft202012Validator:
    "A validator for `schema` (from the OpenAPI document `spec`), its $refs resolved against `spec`'s components."
    return Draft202012Validator({**schema, "components": spec["components"]})


@pytest.fixture(scope="module")
def api():
    "A running in-process app with the small LIMITS; (client, its OpenAPI document)."
    with TestClient(create_app(FakeClassifier(), LIMITS)) as client:
        yield client, client.get("/openapi.json").json()


def post(client, body: bytes, ctype: str | None = "application/json", chunked: bool = False):
    "POST `body` to /predict as it is: Content-Length, or chunked (no length) from a generator."
    return client.post("/predict", content=(b for b in [body]) if chunked else body,
                       headers={"Content-Type": ctype} if ctype is not None else {})


def _reject_constant(name): raise ValueError(name)


def expected_status(body: bytes, ctype: str | None, request_schema: Draft202012Validator) -> int:
    "What the OpenAPI document promises for this request: 413, 415, 400, then 200 if the schema accepts it, else 422."
    if len(body) > LIMITS.max_body_bytes: return 413
    if (ctype or "").split(";")[0].strip().lower() != "application/json": return 415
    try:  # JSON text (RFC 8259): UTF-8, no NaN/Infinity, every string made of characters (no unpaired surrogate)
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError): return 400
    return 200 if request_schema.is_valid(value) else 422


# Generated requests: JSON values of every kind, bodies shaped like requests with random content and sizes (around
# the limits), raw bytes, broken and padded bodies, JSON edge cases, and many content types.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=12)
FINE_TEXT = st.text(min_size=1, max_size=40).filter(str.strip)  # mostly what the schema accepts
BLANKS = st.text(" \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2000\u200a\u2028\u3000", max_size=4)
NOT_QUITE_BLANK = st.text("\u200b\ufeff\x00 \t", min_size=1, max_size=3)  # zero-width space, BOM, NUL: not isspace
AT_LIMIT = st.integers(LIMITS.max_chars - 1, LIMITS.max_chars + 1).flatmap(lambda n: st.text(min_size=n, max_size=n))
TEXT = st.one_of(st.text(max_size=45), AT_LIMIT, BLANKS, NOT_QUITE_BLANK,
                 st.builds(lambda a, b: a + "x" + b, BLANKS, BLANKS),
                 st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2))  # lone surrogates
TEXT_LISTS = st.lists(TEXT, max_size=7) | st.integers(LIMITS.max_texts, LIMITS.max_texts + 1).flatmap(
    lambda n: st.lists(FINE_TEXT, min_size=n, max_size=n))
GOOD_SHAPES = st.one_of(st.builds(lambda t: {"text": t}, TEXT), st.builds(lambda ts: {"texts": ts}, TEXT_LISTS))
FINE_SHAPES = st.one_of(st.builds(lambda t: {"text": t}, FINE_TEXT),
                        st.builds(lambda ts: {"texts": ts}, st.lists(FINE_TEXT, min_size=1, max_size=5)))
ANY_SHAPES = st.fixed_dictionaries({}, optional={
    "text": TEXT | JSON_VALUES, "texts": TEXT_LISTS | JSON_VALUES | st.lists(TEXT | JSON_VALUES, max_size=3),
    "txt": JSON_VALUES, "Text": st.text(max_size=3)})
EDGE_CASES = [
    b"", b"null", b"{}", b"[]", b'"text"', b'{"text": NaN}', b'{"texts": [Infinity]}', b'{"text": "a", "text": "b"}',
    b'{"text": "a", "text": 1}', b'\xef\xbb\xbf{"text": "a"}', b'{"text": "a"} x', b'{"texts": ["a",]}',
    b'{"text": "a"', b'{"text": "\\ud800"}', b'{"text": "x\\udc00"}', b'{"text": "\\ud83d\\ude00"}',
    b'{"text": "\\\\ud800"}', b'{"text": "\\u0020"}', b'{"text": "\\u3000x"}', b'{"text": "caf\xc3\xa9"}',
    b'{"text": "caf\xe9"}', '{"text": "a"}'.encode("utf-16"), b'{"text": "a", "txt": null}', b'{"texts": null}',
    b'{"text": null, "texts": ["a"]}',
    b"[" * 700 + b"]" * 700, b'{"texts": ' + b'["a"], ' * 3 + b"}", b'{"text": "a", "texts": ["b"]}',
    b'{"text": "' + b"x" * 41 + b'"}', b'{"text": "' + b"x" * 40 + b'"}', b'{"texts": ["a", "b", "c", "d", "e", "f"]}']
LITERALS = st.sampled_from(EDGE_CASES)


@st.composite
def encoded(draw, values) -> bytes:
    "A value from `values` as JSON bytes, in one of several spellings (ASCII escapes or not, indented or not)."
    text = json.dumps(draw(values), ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 0, 2])))
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate unescaped: bytes that are not UTF-8


BODIES = st.one_of(
    encoded(FINE_SHAPES), encoded(FINE_SHAPES), encoded(GOOD_SHAPES), encoded(GOOD_SHAPES), encoded(ANY_SHAPES),
    encoded(JSON_VALUES), LITERALS,
    st.binary(max_size=60),
    st.builds(lambda b, n: b[:n], encoded(GOOD_SHAPES), st.integers(0, 40)),  # cut short
    st.builds(lambda b, d: b + b" " * max(0, LIMITS.max_body_bytes - len(b) + d), encoded(GOOD_SHAPES),
              st.integers(-2, 2)),  # padded to the size limit, give or take two bytes
    st.builds(lambda t: json.dumps({"texts": [t * 40] * 5}).encode(), st.sampled_from(["a", "\xe9", "\U0001F600"])))
CONTENT_TYPES = st.sampled_from(["application/json"] * 30 + [
    "application/json; charset=utf-8", "Application/JSON", "application/json ;x=y", None, "", "text/plain",
    "application/x-www-form-urlencoded", "application/jsonl", "application/ld+json", "text/json",
    "multipart/form-data; boundary=x"])


def test_every_answer_keeps_the_published_promise(api):
    "600 generated requests: never a 5xx, always JSON, a 4xx has an error, and the schema decides between 200 and 4xx."
    client, spec = api
    op = spec["paths"]["/predict"]["post"]
    request_schema = validator(spec, op["requestBody"]["content"]["application/json"]["schema"])
    answer_schemas = {int(code): validator(spec, r["content"]["application/json"]["schema"])
                      for code, r in op["responses"].items()}
    seen, fake = Counter(), FakeClassifier()

    @settings(max_examples=600, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body=BODIES, ctype=CONTENT_TYPES, chunked=st.booleans())
    def check(body, ctype, chunked):  # the EDGE_CASES are tried first, as explicit examples
        r = post(client, body, ctype, chunked)
        want = expected_status(body, ctype, request_schema)
        why = (body[:300], ctype, chunked, r.status_code, r.text[:300])
        assert r.status_code < 500, why
        assert r.status_code == want, (f"expected {want}", *why)
        assert r.headers["content-type"] == "application/json", why
        answer = r.json()
        errors = [e.message for e in answer_schemas[r.status_code].iter_errors(answer)]
        assert not errors, (errors, *why)  # the answer has the documented shape of its status
        if r.status_code != 200: assert isinstance(answer["error"], str) and answer["error"].strip(), why
        else:
            value = json.loads(body)
            one = "text" in value
            expect = fake.predict([value["text"]])[0] if one else {"predictions": fake.predict(value["texts"])}
            assert answer == expect, why  # the right prediction, for each text, in order
        seen[r.status_code] += 1

    for body in EDGE_CASES: check = example(body=body, ctype="application/json", chunked=False)(check)
    check()
    assert sum(seen.values()) >= 500 + len(EDGE_CASES), seen
    assert {200, 400, 413, 415, 422} <= set(seen) and seen[200] >= 50 and seen[422] >= 50, seen


def test_schema_states_the_limits(api):
    "Exactly one of text/texts, closed objects, the limits of LIMITS, every status with its JSON schema."
    _, spec = api
    assert spec["openapi"].startswith("3.1")  # JSON Schema 2020-12 inside
    s = spec["components"]["schemas"]
    for schema in s.values(): Draft202012Validator.check_schema(schema)
    refs = [{"$ref": "#/components/schemas/OneText"}, {"$ref": "#/components/schemas/ManyTexts"}]
    assert s["PredictRequest"]["oneOf"] == refs
    text, texts = s["OneText"]["properties"]["text"], s["ManyTexts"]["properties"]["texts"]
    assert s["OneText"]["required"] == ["text"] and s["ManyTexts"]["required"] == ["texts"]
    assert s["OneText"]["additionalProperties"] is False and s["ManyTexts"]["additionalProperties"] is False
    assert (text["type"], text["minLength"], text["maxLength"], text["pattern"]) == ("string", 1, 40, NOT_BLANK)
    assert (texts["minItems"], texts["maxItems"], texts["items"]["maxLength"]) == (1, 5, 40)
    op = spec["paths"]["/predict"]["post"]
    assert op["requestBody"]["required"] is True and list(op["requestBody"]["content"]) == ["application/json"]
    assert sorted(op["responses"]) == ["200", "400", "413", "415", "422", "500"]
    for code, r in op["responses"].items():
        assert list(r["content"]) == ["application/json"], code
        if code != "200": assert r["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "1500 bytes" in op["responses"]["413"]["description"]
    body = validator(spec, op["requestBody"]["content"]["application/json"]["schema"])
    assert body.is_valid({"text": "fine"}) and body.is_valid({"texts": ["a", "b"]})
    for bad in ({"text": "a", "texts": ["b"]}, {}, {"text": None}, {"texts": []}, {"text": " \u3000"},
                {"text": "x" * 41}, {"texts": ["a"] * 6}, {"text": "a", "extra": 1}):
        assert not body.is_valid(bad), bad
    ok = validator(spec, op["responses"]["200"]["content"]["application/json"]["schema"])
    assert ok.is_valid(FakeClassifier().predict(["a"])[0]) and not ok.is_valid({"label": "maybe", "probs": {}})


def test_not_blank_pattern_is_str_isspace():
    "The schema's `pattern` finds a character in exactly the strings that `str.strip` leaves non-empty."
    pattern = re.compile(NOT_BLANK)
    wrong = [hex(i) for i in range(sys.maxunicode + 1) if bool(pattern.fullmatch(chr(i))) == chr(i).isspace()]
    assert not wrong, wrong[:10]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413(api, chunked):
    "A body one byte over the limit is refused, with or without Content-Length; one exactly at the limit is served."
    client, _ = api
    body = b'{"text": "fine"}'
    at_limit = body + b" " * (LIMITS.max_body_bytes - len(body))
    r = post(client, at_limit, chunked=chunked)
    assert r.status_code == 200, r.text
    r = post(client, at_limit + b" ", chunked=chunked)
    assert ("content-length" in r.request.headers) != chunked  # the request really was sent that way
    assert r.status_code == 413 and "limit of 1500 bytes" in r.json()["error"], r.text


def _asgi(middleware, headers: list, chunks) -> tuple[int, list]:
    "Run an ASGI middleware on one POST whose body comes in `chunks` (an iterator); (receive calls, messages sent)."
    calls, sent = 0, []

    async def receive():
        nonlocal calls
        calls += 1
        chunk = next(chunks, None)
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message): sent.append(message)
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers, "query_string": b""}
    asyncio.run(middleware(scope, receive, send))
    return calls, sent


def test_body_limit_never_keeps_more_than_the_limit():
    "An endless body: 413 once past the limit, the app never runs, the rest dropped up to `drain_bytes`, then no more."
    async def app(scope, receive, send): raise AssertionError("the app must not see an oversized body")
    endless = (b"x" * 1000 for _ in iter(int, 1))
    calls, sent = _asgi(BodyLimit(app, 5000, drain_bytes=20_000), [], endless)
    assert sent[0]["status"] == 413 and b"limit of 5000 bytes" in b"".join(m.get("body", b"") for m in sent[1:])
    assert 6 + 20 <= calls <= 6 + 22, calls  # 5000 bytes + 1 chunk read, then 20000 dropped, then it stops listening
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_body_limit_memory_stays_bounded():
    "Refusing a 64 MiB upload (64 KiB chunks, all received and dropped) never holds much more than the 1 MiB limit."
    async def app(scope, receive, send): raise AssertionError("the app must not see an oversized body")
    chunks = (b"x" * 2**16 for _ in range(2**10))
    tracemalloc.start()
    try: calls, sent = _asgi(BodyLimit(app, 2**20, drain_bytes=2**26), [], chunks)
    finally: peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    assert sent[0]["status"] == 413 and calls == 2**10 + 1  # every chunk received, and the end of the body
    assert peak < 2**20 + 2**19, peak  # the limit, one chunk and change: not the 64 MiB


@pytest.mark.parametrize("declared,calls", [(10_000, 11), (10**9, 0)])
def test_body_limit_refuses_a_declared_length_unread(declared, calls):
    "Content-Length over the limit: 413 before the body is read; a body within `drain_bytes` is then dropped."
    async def app(scope, receive, send): raise AssertionError("the app must not see an oversized body")
    chunks = iter([b"x" * 1000] * 10)
    got, sent = _asgi(BodyLimit(app, 5000, drain_bytes=20_000), [(b"content-length", str(declared).encode())], chunks)
    assert sent[0]["status"] == 413 and got == calls  # 10 chunks and the closing empty one; none at all for 1 GB


def test_body_limit_passes_a_small_body_on_whole():
    "A body under the limit, in several chunks, reaches the app as one message, then the server's next message."
    got = []
    async def app(scope, receive, send):
        got.extend([await receive(), await receive()])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    calls, sent = _asgi(BodyLimit(app, 5000), [], iter([b"ab", b"cd", b"ef"]))
    assert got[0] == {"type": "http.request", "body": b"abcdef", "more_body": False} and sent[0]["status"] == 204


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None, "application/xml", ""])
def test_wrong_content_type_is_415(api, ctype):
    "A JSON body sent under another (or no) Content-Type is refused, and the answer says which type to send."
    client, _ = api
    r = post(client, json.dumps({"text": "fine"}).encode(), ctype)
    assert r.status_code == 415 and "Content-Type: application/json" in r.json()["error"], r.text


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "APPLICATION/JSON"])
def test_json_content_type_variants_are_served(api, ctype):
    client, _ = api
    assert post(client, json.dumps({"text": "fine"}).encode(), ctype).status_code == 200


def test_deeply_nested_json_is_400():
    "JSON nested deeper than the parser's recursion limit is a 400 with a message, not a server error."
    with TestClient(create_app(FakeClassifier())) as client:
        r = post(client, b"[" * 100_000 + b"]" * 100_000)
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"], r.text


def test_shape_error_does_not_echo_the_input(api):
    "A 422 for the wrong shape names the field and the problem, without sending the (possibly huge) input back."
    client, _ = api
    r = post(client, json.dumps({"texts": "a long string that should not come back"}).encode())
    assert r.status_code == 422 and r.json()["error"].startswith("texts:") and "should not come back" not in r.text


@pytest.mark.parametrize("batching", [True, False], ids=["batching", "one-by-one"])
def test_model_failure_is_a_json_500_and_serving_goes_on(batching):
    "The model raising gives a JSON 500 that says so; the next request is answered as usual (within 20 s, or fails)."
    app = create_app(FakeClassifier(fail_on="boom"), ServeConfig(batching=batching))

    async def scenario():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://app") as c:
            bodies = ({"text": "boom"}, {"texts": ["ok", "boom"]})
            failed = [await asyncio.wait_for(c.post("/predict", json=b), 20) for b in bodies]
            return failed, await asyncio.wait_for(c.post("/predict", json={"texts": ["fine", "good"]}), 20)

    failed, after = asyncio.run(scenario())
    for r in failed:
        assert r.status_code == 500 and r.headers["content-type"] == "application/json", r.text
        assert "the model failed on this request (RuntimeError)" in r.json()["error"], r.text
    assert after.status_code == 200 and len(after.json()["predictions"]) == 2, after.text  # the service goes on


def test_load_test_pins_server_and_clients_apart():
    "bench/serve_load.py gives the load generator its own core whenever there are two (one core: they share it)."
    from bench.serve_load import split_cores
    assert split_cores([0, 1]) == ({0}, {1}) and split_cores([0, 1, 2, 3]) == ({0, 1, 2}, {3})
    assert split_cores([5]) == ({5}, {5})
    server, clients = split_cores()
    assert server | clients == os.sched_getaffinity(0) and (len(server | clients) < 2 or not server & clients)
