"""`ft-kit serve` as a real process on a free loopback port: predictions, 4xx for bad input, concurrency, clean SIGTERM."""
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

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
    # independent reference: the same folder loaded with plain transformers in this process
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    m, tok = AutoModelForSequenceClassification.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad(): p = torch.softmax(m(**tok(["Dull and far too long."], return_tensors="pt")).logits, -1)[0]
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
    ("not JSON", {"raw": b"hello", "ctype": "text/plain"}, 422),
])
def test_bad_input_is_4xx_with_message(server, name, kw, expect):
    _, port = server
    status, body = call(port, "/predict", **kw)
    assert status == expect, (name, status, body)
    assert isinstance(body, dict) and body.get("error"), (name, body)


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
    s, page = call(port, "/docs")
    assert s == 200 and "/predict" in page and "<script" not in page  # works offline: no CDN scripts


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
