"""Target-generation throughput: one-by-one vs batched (in input order, and length-sorted as ``fe-train generate``
does), generated tokens per second measured side by side in one process, and whether the replies agree.

    python bench/generate_throughput.py                       # the tests' tiny chat LLM, built here (CPU)
    python bench/generate_throughput.py --llm DIR --device cuda --dtype bf16 --prompts 512 --batch-size 32

Without ``--llm`` it builds the tiny Qwen2-form chat LLM of the tests and pre-trains it
on the synthetic questions until it answers each exactly, so that its replies end at an
end of turn like a real instruct model's. Modes run in turn, ``--repeats`` times; the
medians are printed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

import torch

from fe_train.config import HELPFUL_SYSTEM
from fe_train.data import synthetic
from fe_train.fixtures import tiny
from fe_train.fixtures.assets import stretched
from fe_train.generate.plan import GenerationPlan, Item
from fe_train.generate.replies import Sampling, eos_ids, generate_batch, prompt_ids
from fe_train.launch.logs import setup_logging


def tiny_llm(out_dir: str):
    """The tests' tiny chat LLM, pre-trained until it answers every question (plain text) exactly."""
    questions = synthetic.instructions()
    tokenizer = tiny.build_tokenizer([HELPFUL_SYSTEM, *(i.text for i in questions), *(i.answer for i in questions)], out_dir)
    llm = tiny.build_llm(tokenizer)
    rng = random.Random(0)
    checked = [(HELPFUL_SYSTEM, i.text, i.answer) for i in questions]
    chats = checked + [(HELPFUL_SYSTEM, stretched(i.text, rng), i.answer) for i in rng.choices(questions, k=2000)]
    tiny.pretrain_llm(llm, tokenizer, "bench LLM", chats, checked, "text questions answered")
    llm.save_pretrained(out_dir)
    return out_dir


def prompts(tokenizer, n: int) -> list[list[int]]:
    """``n`` prompts of many lengths: the questions with each word said 1-4 times, in random order."""
    rng = random.Random(1)
    users = [stretched(rng.choice(synthetic.instructions()).text, rng) for _ in range(n)]
    return prompt_ids(tokenizer, HELPFUL_SYSTEM, users)


def run_mode(llm, batches: list[list[list[int]]], sampling, eos, pad_id, device) -> tuple[float, int, list]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    replies = [r for rows in batches for r in generate_batch(llm, rows, sampling, eos, pad_id)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(len(r.token_ids) + r.finished for r in replies)  # the end-of-turn token is generated too
    return seconds, tokens, replies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", default="", help="a save_pretrained causal LM with a chat template (default: build the tiny one)")
    parser.add_argument("--prompts", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (a tiny model gains nothing from more)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup_logging(0)

    from fe_train.model.frozen_llm import load_llm, load_tokenizer

    path = args.llm or tiny_llm(tempfile.mkdtemp(prefix="fe-bench-llm-"))
    device = torch.device(args.device)
    llm = load_llm(path, torch.bfloat16 if args.dtype == "bf16" else torch.float32).to(device)
    tokenizer = load_tokenizer(path)
    rows = prompts(tokenizer, args.prompts)
    sampling, eos, pad = Sampling(max_new_tokens=args.max_new_tokens), eos_ids(llm, tokenizer), tokenizer.pad_token_id
    b = args.batch_size
    plan = GenerationPlan([Item(f"{i:06d}", tuple(row), "", "") for i, row in enumerate(rows)], b)
    order = {f"{i:06d}": i for i in range(len(rows))}
    modes = {
        "one-by-one": [[row] for row in rows],
        f"batched {b}, input order": [rows[i:i + b] for i in range(0, len(rows), b)],
        f"batched {b}, length-sorted": [[list(item.prompt_ids) for item in batch.items] for batch in plan.batches],
    }
    sorted_keys = [order[key] for key in plan.keys]
    generate_batch(llm, rows[:b], sampling, eos, pad)  # warm-up
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    replies: dict[str, list] = {}
    for _ in range(args.repeats):
        for mode, batches in modes.items():
            seconds, tokens, out = run_mode(llm, batches, sampling, eos, pad, device)
            rates[mode].append(tokens / seconds)
            replies[mode] = out
    # Put the length-sorted replies back in input order before comparing.
    unsorted = [None] * len(rows)
    for position, reply in zip(sorted_keys, replies[list(modes)[2]]):
        unsorted[position] = reply
    replies[list(modes)[2]] = unsorted

    reference = [r.token_ids for r in replies["one-by-one"]]
    base = statistics.median(rates["one-by-one"])
    print(f"model {path} on {device} ({args.dtype}, {args.threads} CPU threads), {len(rows)} prompts of {min(map(len, rows))}-{max(map(len, rows))} "
          f"tokens, max_new_tokens {args.max_new_tokens}, median of {args.repeats}")
    print(f"{'mode':32s} {'tokens/s':>10s} {'x one-by-one':>13s} {'replies equal to one-by-one':>28s}")
    for mode in modes:
        rate = statistics.median(rates[mode])
        same = sum(r.token_ids == ref for r, ref in zip(replies[mode], reference))
        print(f"{mode:32s} {rate:10.1f} {rate / base:13.2f} {same:>20d}/{len(rows)}")


if __name__ == "__main__":
    main()
