"""PEFT parity for LoRA adapters (the Rust test `core/tests/parity_peft.rs` runs this).

  make OUT TOKENIZER_DIR     tiny random Llama models made by transformers (untied; tied), f32
  check BASE ADAPTER MERGED SEQS.json OUT.json
                             logits of BASE with ADAPTER loaded by PEFT (`PeftModel.from_pretrained`)
                             and of the MERGED export loaded by transformers, for each sequence

Needs `pip install torch transformers peft`.
"""

import json
import os
import shutil
import sys

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM


def make(out, tok_dir):
    torch.manual_seed(0)
    common = dict(vocab_size=259, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  rms_norm_eps=1e-6, eos_token_id=258, bos_token_id=None, rope_theta=10000.0)
    for name, tied in (("untied", False), ("tied", True)):
        d = os.path.join(out, name)
        LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=tied)).save_pretrained(d, safe_serialization=True)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(tok_dir, f), os.path.join(d, f))


def check(base, adapter, merged, seqs_path, out):
    from peft import PeftModel

    seqs = json.load(open(seqs_path))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    model.eval()
    plain = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    plain.eval()
    with torch.no_grad():
        result = {
            "peft": [model(torch.tensor([s])).logits[0].tolist() for s in seqs],
            "merged": [plain(torch.tensor([s])).logits[0].tolist() for s in seqs],
        }
    json.dump(result, open(out, "w"))


if __name__ == "__main__":
    {"make": make, "check": check}[sys.argv[1]](*sys.argv[2:])
