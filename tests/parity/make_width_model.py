"""A random transformers Llama of a given width, with the built-in byte-level tokenizer, for the
speed and memory comparisons (`tests/parity/speed_vs_torch.sh`, `core-cli bench memory`).

Usage: python3 tests/parity/make_width_model.py OUT_DIR TOKENIZER_DIR HIDDEN LAYERS
(d = 64: 2 layers, intermediate 172; d = 512: 4 layers, intermediate 1376, 8 heads, 4 KV heads.)
Needs `pip install torch transformers`.
"""

import os
import shutil
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main(out, tok_dir, hidden, layers):
    hidden, layers = int(hidden), int(layers)
    torch.manual_seed(0)
    heads = max(hidden // 64, 1)
    cfg = LlamaConfig(vocab_size=259, hidden_size=hidden, intermediate_size=int(hidden * 2.6875) // 8 * 8,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=max(heads // 2, 1), max_position_embeddings=131072,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                      eos_token_id=258, bos_token_id=None)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, f), os.path.join(out, f))
    n = sum(p.numel() for p in model.parameters())
    print(f"{out}: d={hidden}, {layers} layers, {n / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main(*sys.argv[1:])
