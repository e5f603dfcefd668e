"""A tiny BERT classifier and random token data, shared by the training tests (and the distributed worker script)."""
import torch
from transformers import BertConfig, BertForSequenceClassification


def tiny_bert(seed: int = 0, dropout: float = 0.1, vocab: int = 100) -> BertForSequenceClassification:
    "A 2-layer BERT classifier, hidden size 16, weights drawn after seeding torch with `seed`."
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_labels=2,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertForSequenceClassification(cfg)


def items(n: int, seed: int) -> list[dict]:
    "Random token sequences of 3-11 ids; the label is whether the first id is above 50."
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 100, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
        out.append({"input_ids": ids, "labels": int(ids[0] > 50)})
    return out
