"""Saved model folders in a fresh interpreter: round trips through plain transformers and peft, merge, int8, ONNX."""
import subprocess
import sys

import numpy as np
import pytest
import torch

TEXTS = ["A warm, funny film.", "Dull.", "It has moments, but the plot falls apart in the last act and never recovers."]


@pytest.fixture(scope="module")
def lora_model():
    "The packaged encoder on the [CLS] pooler (plain transformers reloads it alone), LoRA B non-zero, a seeded head."
    from ft_kit.lora import LoRAConfig, apply_lora
    from ft_kit.models import load_encoder
    torch.manual_seed(0)
    m, tok = load_encoder(device="cpu", pooling="cls")
    apply_lora(m, LoRAConfig(r=4, alpha=8))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n: p.normal_(0, 0.05)
    return m.eval(), tok


def logits(model, tok, texts=TEXTS):
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad(): return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits


def test_lora_merged_folder_loads_in_plain_transformers(lora_model, tmp_path):
    from transformers import AutoModelForSequenceClassification
    from ft_kit.deploy import ModelInfo, load_model, plain_model, save_model
    m, tok = lora_model
    d = save_model(m, tok, tmp_path / "merged", ModelInfo(method="lora"))
    plain = AutoModelForSequenceClassification.from_pretrained(d).eval()
    assert torch.equal(logits(plain, tok), logits(plain_model(m), tok))
    assert torch.equal(logits(load_model(d)[0], tok), logits(plain_model(m), tok))
    torch.testing.assert_close(logits(plain, tok), logits(m, tok), atol=1e-5, rtol=0)  # merging only rounds


def test_lora_adapter_folder_loads_in_plain_peft_and_merges(lora_model, tmp_path):
    from peft import PeftModel
    from ft_kit.deploy import ModelInfo, load_model, merge_adapter, read_info, save_model
    from ft_kit.models import load_encoder
    m, tok = lora_model
    d = save_model(m, tok, tmp_path / "adapter", ModelInfo(method="lora"), merge=False)
    assert read_info(d).format == "peft" and (d / "adapter_config.json").exists()
    base, _ = load_encoder(device="cpu", pooling="cls")
    pm = PeftModel.from_pretrained(base, d).eval()
    torch.testing.assert_close(logits(pm, tok), logits(m, tok), atol=1e-6, rtol=0)  # peft computes what our layers do
    assert torch.equal(logits(load_model(d)[0], tok), logits(pm, tok))
    merged = merge_adapter(d, tmp_path / "remerged")
    torch.testing.assert_close(logits(load_model(merged)[0], tok), logits(m, tok), atol=1e-5, rtol=0)


def test_full_and_head_round_trip(tmp_path):
    from ft_kit.deploy import ModelInfo, load_model, read_info, save_model
    from ft_kit.models import load_encoder
    torch.manual_seed(1)
    m, tok = load_encoder(device="cpu")
    with torch.no_grad(): m.classifier.weight.normal_(0, 1)  # a head unlike a fresh one
    d = save_model(m, tok, tmp_path / "head", ModelInfo(method="head", labels=("bad", "good"), max_length=64))
    m2, tok2, info = load_model(d)
    assert torch.equal(logits(m2, tok2), logits(m, tok))
    assert info == read_info(d) and info.labels == ("bad", "good") and info.max_length == 64
    assert m2.config.id2label == {0: "bad", 1: "good"}
    with pytest.raises(FileExistsError, match="already exists"): save_model(m, tok, d)


def test_int8_and_onnx_backends(lora_model, tmp_path):
    from ft_kit.deploy import ModelInfo, load_classifier, save_model
    m, tok = lora_model
    d = save_model(m, tok, tmp_path / "m", ModelInfo(method="lora"))
    ref = torch.softmax(logits(m, tok, TEXTS * 3), -1).numpy()  # batch of 9, padded
    clfs = {b: load_classifier(d, b, batch_size=4) for b in ("torch", "int8", "onnx")}  # other batch shapes than the export
    np.testing.assert_allclose(clfs["torch"].predict_proba(TEXTS * 3), ref, atol=1e-5)
    np.testing.assert_allclose(clfs["onnx"].predict_proba(TEXTS * 3), ref, atol=1e-4)
    np.testing.assert_allclose(clfs["int8"].predict_proba(TEXTS * 3), ref, atol=0.05)
    assert (d / "model.onnx").exists()
    again = load_classifier(d, "onnx")  # reuses the exported file
    np.testing.assert_allclose(again.predict_proba(TEXTS), ref[:3], atol=1e-4)


def test_import_is_light():
    "ft_kit.deploy imports neither onnxruntime nor fastapi until they are used."
    code = "import sys, ft_kit.deploy; print('onnxruntime' in sys.modules, 'fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_int8_leaves_no_float_linear_and_shrinks(lora_model):
    "Every Linear becomes an int8 dynamic Linear (weights stored as qint8), the state dict shrinks, the logits change a little."
    from torch import nn
    from ft_kit.deploy import model_size_mb, plain_model, quantize_int8
    m, tok = lora_model
    q = quantize_int8(m)
    assert not [n for n, mod in q.named_modules() if type(mod) is nn.Linear]  # no float Linear left
    qlin = [mod for mod in q.modules() if type(mod).__name__ == "Linear" and type(mod) is not nn.Linear]
    assert qlin and all(mod.weight().dtype == torch.qint8 for mod in qlin)
    n_linear = sum(mod.weight.numel() for mod in plain_model(m).modules() if type(mod) is nn.Linear)
    saved = model_size_mb(plain_model(m)) - model_size_mb(q)  # int8 weights: 3 of every 4 bytes of each Linear weight
    assert saved > 0.9 * 3 * n_linear / 2**20
    a, b = logits(plain_model(m), tok), logits(q, tok)
    assert 0 < (a - b).abs().max() < 0.5  # int8 rounding: close, but not the float model


def test_compare_backends_against_an_independent_computation(lora_model, tmp_path):
    "Accuracy, agreement and the largest logit difference equal what the models themselves give on the same texts."
    import pandas as pd
    from ft_kit.deploy import ModelInfo, compare_backends, plain_model, quantize_int8, save_model
    m, tok = lora_model
    d = save_model(m, tok, tmp_path / "m", ModelInfo(method="lora"))
    df = pd.DataFrame({"text": TEXTS * 2, "label": [1, 0, 0, 0, 1, 1]})
    t = compare_backends(d, df, backends=("torch", "int8"), n_latency=2, batch_size=4)
    zf, zq = (logits(x, tok, df["text"].tolist()).numpy() for x in (plain_model(m), quantize_int8(m)))
    y = df["label"].to_numpy()
    assert t.loc["torch", "accuracy"] == pytest.approx((zf.argmax(1) == y).mean())
    assert t.loc["int8", "accuracy"] == pytest.approx((zq.argmax(1) == y).mean())
    assert t.loc["int8", "agreement"] == pytest.approx((zq.argmax(1) == zf.argmax(1)).mean())
    assert t.loc["torch", "max_logit_diff"] == pytest.approx(0.0, abs=1e-5)
    assert t.loc["int8", "max_logit_diff"] == pytest.approx(np.abs(zq - zf).max(), abs=1e-3) and t.loc["int8", "max_logit_diff"] > 0


@pytest.fixture(scope="module")
def mean_lora():
    "The packaged encoder on mean pooling (as the experiment layer trains it) with non-zero LoRA adapters and a seeded head."
    from ft_kit.lora import LoRAConfig, apply_lora
    from ft_kit.models import load_encoder
    torch.manual_seed(1)
    m, tok = load_encoder(device="cpu")  # pooling "auto": mean, from MiniLM's folder
    apply_lora(m, LoRAConfig(r=4, alpha=8))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n: p.normal_(0, 0.05)
    return m.eval(), tok


@pytest.mark.parametrize("merge", [True, False])
def test_mean_pooled_model_round_trips_with_its_pooling(mean_lora, tmp_path, merge):
    "A mean-pooled classifier saved and loaded again reads the mean-pooled vector, not the [CLS] pooler (every backend)."
    from ft_kit.deploy import ModelInfo, load_classifier, load_model, read_info, save_model
    from ft_kit.models import MeanPooler
    m, tok = mean_lora
    d = save_model(m, tok, tmp_path / "m", ModelInfo(method="lora"), merge=merge)
    assert read_info(d).pooling == "mean" and read_info(d).format == ("transformers" if merge else "peft")
    back, _, _ = load_model(d)
    assert any(isinstance(mod, MeanPooler) for mod in back.modules())
    ref = torch.softmax(logits(m, tok), -1).numpy()
    np.testing.assert_allclose(torch.softmax(logits(back, tok), -1).numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(load_classifier(d, "onnx").predict_proba(TEXTS), ref, atol=1e-4)
    np.testing.assert_allclose(load_classifier(d, "int8").predict_proba(TEXTS), ref, atol=0.05)
    if merge:  # plain transformers alone puts the head back on the [CLS] pooler: other numbers, so the check can fail
        from transformers import AutoModelForSequenceClassification
        plain = AutoModelForSequenceClassification.from_pretrained(d).eval()
        assert np.abs(torch.softmax(logits(plain, tok), -1).numpy() - ref).max() > 1e-3
