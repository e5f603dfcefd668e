"""A tiny BERT classifier and random token data, shared by the training, LoRA, PEFT and continual tests (and the distributed worker script)."""
import torch
from transformers import BertConfig, BertForSequenceClassification


def tiny_bert(seed: int = 0,  # torch is seeded with it before the weights are drawn
              dropout: float = 0.1,  # hidden and attention dropout
              vocab: int = 100,  # vocabulary size
              hidden: int = 16,  # hidden size
              layers: int = 2,  # encoder layers
              heads: int = 2,  # attention heads (must divide `hidden`)
              intermediate: int = 32,  # feed-forward width
              num_labels: int = 2,  # classes of the head
              max_positions: int = 64,  # position embeddings
             ) -> BertForSequenceClassification:
    "A small random BERT classifier built from a config (default: 2 layers, hidden size 16), in train mode."
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=intermediate, max_position_embeddings=max_positions, num_labels=num_labels,
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
