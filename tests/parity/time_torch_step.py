"""Times the same training steps in PyTorch + transformers, for an honest speed ratio (opt-in).

Reads a plan written by `core-cli plan --out plan.jsonl` over the same data and tokenizer, so both
sides run exactly the same sequences with the same loss weights. PyTorch runs each sequence of a
packed row on its own (attention within the sequence only: what packing computes), sums
weight × cross-entropy over the step, backward, AdamW. Prints useful tokens/s; with an
`events.jsonl` of a `core-cli train` run over the same plan, prints the ratio too.

    core-cli plan --data DATA --tokenizer MODEL --max-tokens 2048 --out plan.jsonl
    core-cli train --model MODEL --data DATA --max-tokens 2048 --steps 20 --out run
    python3 tests/parity/time_torch_step.py MODEL DATA plan.jsonl 20 [run/events.jsonl] [--mask]

With `--mask`, each packed row runs as one sequence with an explicit 4-D block-causal attention
mask and positions restarting per sequence (what a TRL user packing on CPU gets without
FlashAttention's varlen path); without it, each sequence runs alone (PyTorch's best case).

Needs `pip install torch transformers`. Threads: torch uses all cores (as Burn's Flex does).
"""

import json
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tiny_models import target_mask  # noqa: E402


def block_causal(lengths):
    """[1, 1, L, L] additive mask: 0 where a token may attend (causal, same sequence), -inf elsewhere."""
    total = sum(lengths)
    allowed = torch.zeros(total, total, dtype=torch.bool)
    start = 0
    for n in lengths:
        allowed[start:start + n, start:start + n] = torch.tril(torch.ones(n, n, dtype=torch.bool))
        start += n
    mask = torch.zeros(total, total)
    mask.masked_fill_(~allowed, float("-inf"))
    return mask[None, None]


def row_loss(model, row, encoded):
    """One packed row as one sequence with a block-causal mask: Σ w·CE over its targets."""
    ids, pos, labels, weights, lengths = [], [], [], [], []
    for k, (i, w) in enumerate(zip(row["ids"], row["weights"])):
        n = row["cu_seqlens"][k + 1] - row["cu_seqlens"][k]
        toks, targets = encoded[i][0][:n], encoded[i][1][:n]
        for p in range(n):
            nxt = p + 1 < n and targets[p + 1]
            labels.append(toks[p + 1] if nxt else -100)
            weights.append(w if nxt else 0.0)
        ids += toks
        pos += list(range(n))
        lengths.append(n)
    logits = model(torch.tensor([ids]), attention_mask=block_causal(lengths),
                   position_ids=torch.tensor([pos])).logits[0]
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor(labels), reduction="none", ignore_index=-100)
    return (ce * torch.tensor(weights)).sum(), len(ids)


def main(model_dir, data_path, plan_path, steps, events=None, mode=None):
    if events == "--mask":
        events, mode = None, "--mask"
    masked = mode == "--mask"
    steps = int(steps)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    examples = [json.loads(l) for l in open(data_path) if l.strip()]
    encoded = [target_mask(tok, ex["messages"]) for ex in examples]
    by_step = {}
    for line in open(plan_path):
        mb = json.loads(line)
        by_step.setdefault(mb["step"], []).append(mb)
    times, useful = [], []
    for s in range(min(steps, len(by_step))):
        t0 = time.perf_counter()
        n_tokens = 0
        opt.zero_grad()
        for mb in by_step[s]:
            for row in mb["rows"]:
                if masked:
                    loss, n = row_loss(model, row, encoded)
                    loss.backward()
                    n_tokens += n
                    continue
                for k, (i, w) in enumerate(zip(row["ids"], row["weights"])):
                    n = row["cu_seqlens"][k + 1] - row["cu_seqlens"][k]
                    ids, targets = encoded[i]
                    ids, targets = ids[:n], targets[:n]
                    n_tokens += n
                    pos = [p for p in range(n - 1) if targets[p + 1]]
                    if not pos or w == 0:
                        continue
                    logits = model(torch.tensor([ids])).logits[0]
                    lab = torch.tensor([ids[p + 1] for p in pos])
                    loss = torch.nn.functional.cross_entropy(logits[pos], lab, reduction="sum") * w
                    loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        useful.append(n_tokens)
    # Skip the first step (allocator warm-up) on both sides.
    torch_tps = sum(useful[1:]) / sum(times[1:])
    how = "rows with a block-causal mask" if masked else "sequences one by one"
    print(f"pytorch {torch.__version__}, {torch.get_num_threads()} threads, {how}: {torch_tps:.0f} useful tok/s over steps 2..{len(times)}")
    if events:
        ev = [json.loads(l) for l in open(events)][1 : len(times)]
        ours = sum(e["useful_tokens"] for e in ev) / sum(e["step_s"] for e in ev)
        print(f"longalign-rs (events): {ours:.0f} useful tok/s over the same steps; ratio ours/pytorch = {ours / torch_tps:.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
