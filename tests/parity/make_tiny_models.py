"""Reference outputs from Hugging Face transformers for the opt-in parity test.

Makes tiny random models with transformers (`save_pretrained`, f32 safetensors), the built-in
byte-level tokenizer files next to them, and writes what transformers computes:

* `logits.json`: for each model, the logits of a few token sequences (each run alone);
* `scores.json`: for each model, per-example mean cross entropy over the loss targets of a small
  chat dataset, targets located exactly as LongAlign-rs does (render(messages[..=k]) minus
  render(messages[..k], add_generation_prompt=True)), tokens from `apply_chat_template`.

Usage: python3 tests/parity/make_tiny_models.py OUT_DIR TOKENIZER_DIR DATA.jsonl
(the Rust test `core/tests/parity_transformers.rs` runs it; needs `pip install torch transformers`).
"""

import json
import os
import shutil
import sys

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

SEQUENCES = [[1, 5, 7, 9, 11, 13, 250, 3], [42, 17], [200, 100, 50, 25, 12, 6, 3, 1, 0, 258, 257, 256]]


def models():
    common = dict(vocab_size=259, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-6, eos_token_id=258, bos_token_id=None)
    yield "llama_llama3_rope", LlamaForCausalLM(LlamaConfig(
        **common, rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32}))
    yield "llama_linear_rope_bias", LlamaForCausalLM(LlamaConfig(
        **common, rope_theta=10000.0, tie_word_embeddings=True, attention_bias=True,
        rope_scaling={"rope_type": "linear", "factor": 2.0}))
    yield "qwen2", Qwen2ForCausalLM(Qwen2Config(**common, rope_theta=1000000.0, tie_word_embeddings=True))


def target_mask(tok, messages):
    full = tok.apply_chat_template(messages, tokenize=False)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        pre = tok.apply_chat_template(messages[:k], tokenize=False, add_generation_prompt=True) if k else ""
        post = tok.apply_chat_template(messages[: k + 1], tokenize=False)
        spans.append((len(pre.encode()), len(post.encode())))
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    # offsets are in characters; convert to bytes like the Rust side.
    char_to_byte = [0]
    for ch in full:
        char_to_byte.append(char_to_byte[-1] + len(ch.encode()))
    starts = [char_to_byte[s] for s, _ in enc["offset_mapping"]]
    targets = [any(a <= st < b for a, b in spans) for st in starts]
    if targets:
        targets[0] = False
    via_template = tok.apply_chat_template(messages, tokenize=True)
    if hasattr(via_template, "keys"):  # transformers >= 5 returns a BatchEncoding
        via_template = via_template["input_ids"]
    assert ids == list(via_template), "apply_chat_template tokenization differs"
    return ids, targets


def main(out, tok_dir, data_path):
    torch.manual_seed(0)
    examples = [json.loads(l) for l in open(data_path) if l.strip()]
    logits, scores, greedy = {}, {}, {}
    for name, model in models():
        d = os.path.join(out, name)
        model.eval()
        model.save_pretrained(d, safe_serialization=True)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(tok_dir, f), os.path.join(d, f))
        tok = AutoTokenizer.from_pretrained(d)
        with torch.no_grad():
            logits[name] = [model(torch.tensor([s])).logits[0].tolist() for s in SEQUENCES]
            per = []
            for i, ex in enumerate(examples):
                ids, targets = target_mask(tok, ex["messages"])
                lg = model(torch.tensor([ids])).logits[0]
                pos = [p for p in range(len(ids) - 1) if targets[p + 1]]
                lab = torch.tensor([ids[p + 1] for p in pos])
                loss = torch.nn.functional.cross_entropy(lg[pos], lab).item()
                per.append({"index": i, "loss": loss, "target_tokens": len(pos)})
            scores[name] = per
            # Greedy continuations (no EOS stop: every model generates all 16 tokens).
            model.generation_config.eos_token_id = None
            greedy[name] = [
                model.generate(torch.tensor([s]), max_new_tokens=16, do_sample=False)[0][len(s):].tolist()
                for s in SEQUENCES
            ]
    json.dump({"sequences": SEQUENCES, "logits": logits, "greedy": greedy}, open(os.path.join(out, "logits.json"), "w"))
    json.dump(scores, open(os.path.join(out, "scores.json"), "w"))


if __name__ == "__main__":
    main(*sys.argv[1:4])
