"""Token ids and loss targets of chat conversations, computed with transformers and a real tokenizer.

For a template with `{% generation %}` blocks: `apply_chat_template(tokenize=True, return_dict=True,
return_assistant_tokens_mask=True)`, transformers' own assistant mask. For the others, LongAlign-rs's
documented rule done with transformers' renders and the fast tokenizer's offsets: targets of
assistant turn k are render(messages[..=k]) minus render(messages[..k], add_generation_prompt=True);
where that is not a prefix of the whole rendering, `--turns split`: one sequence per assistant turn,
the conversation up to it, that turn the only target. Token 0 is never a target (nothing predicts
it), as in LongAlign-rs.

Usage: python3 tests/parity/template_targets.py TOKENIZER_DIR TEMPLATE|- CONVERSATIONS.json OUT.json
(the opt-in Rust test `real_tokenizers_match_transformers` in core/tests/chat_templates.rs runs it;
needs `pip install transformers`).
"""

import json
import sys

from transformers import AutoTokenizer


def main(tok_dir, template_path, conversations_path, out_path):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    template = None if template_path == "-" else open(template_path, encoding="utf-8").read()
    conversations = json.load(open(conversations_path, encoding="utf-8"))["conversations"]

    def render(messages, agp):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=agp, chat_template=template)

    def prompt_before(messages, k):
        try:
            return render(messages[:k], True)
        except Exception:  # noqa: BLE001 - some templates cannot render an empty conversation
            if k == 0:
                return ""
            raise

    def spans(messages, last_only):
        full = render(messages, False)
        turns = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
        out = []
        for k in turns[-1:] if last_only else turns:
            pre, post = prompt_before(messages, k), render(messages[: k + 1], False)
            if not post.startswith(pre) or not full.startswith(post):
                return full, None
            if len(post) > len(pre):
                out.append((len(pre), len(post)))
        return full, out

    def encode(text, sp):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        targets = [any(a <= s < b for a, b in sp) for s, _ in enc["offset_mapping"]]
        if targets:
            targets[0] = False
        return {"ids": enc["input_ids"], "targets": targets}

    result = {}
    for name, messages in conversations.items():
        try:
            if template is not None and "generation" in template:
                out = tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                              return_assistant_tokens_mask=True, chat_template=template)
                targets = [bool(m) for m in out["assistant_masks"]]
                targets[0] = False
                result[name] = [{"ids": list(out["input_ids"]), "targets": targets}]
                continue
            text, sp = spans(messages, False)
            if sp is not None:
                result[name] = [encode(text, sp)]
                continue
            seqs = []
            for k, m in enumerate(messages):
                if m["role"] == "assistant":
                    text, sp = spans(messages[: k + 1], True)
                    assert sp is not None, f"{name}: turn {k} is not prefix-stable even as the last turn"
                    seqs.append(encode(text, sp))
            result[name] = seqs
        except Exception as e:  # noqa: BLE001 - the error is the expectation
            result[name] = {"error": str(e)}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:5])
