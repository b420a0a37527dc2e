#!/usr/bin/env python3
"""Hugging Face reference for bench_gpu_generate: GPT-2 124M greedy generation
tokens/s at batch 1 and 32 with transformers' generate() (KV cache on), on the
same GPU. Same shapes as the C benchmark: a 16-token prompt per row, 128 new
tokens, random weights (GPT2Config defaults = GPT-2 124M) unless --model DIR
gives a model directory (e.g. one written by `flywheel-engine save`, so both
run the same weights). --dtype float32|bfloat16 (the engine's FP32/BF16 modes).

Prints {"bench": "hf_generate", "metric": "tokens_per_s_gpt2_124m_b{B}", ...}.
"""
import argparse
import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.model:
        model = GPT2LMHeadModel.from_pretrained(args.model, torch_dtype=dtype)
    else:
        torch.manual_seed(1)
        model = GPT2LMHeadModel(GPT2Config()).to(dtype)
    model = model.cuda().eval()
    V = model.config.vocab_size
    for B in (1, 32):
        prompt = torch.tensor([[(r * 31 + i * 7) % V for i in range(16)] for r in range(B)],
                              device="cuda")
        kw = dict(max_new_tokens=128, min_new_tokens=128, do_sample=False, use_cache=True,
                  pad_token_id=0, attention_mask=torch.ones_like(prompt))
        with torch.no_grad():
            model.generate(prompt, **kw)  # warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.generate(prompt, **kw)
            torch.cuda.synchronize()
        tps = B * 128 / (time.perf_counter() - t0)
        print(json.dumps({"bench": "hf_generate", "metric": "tokens_per_s_gpt2_124m_b%d" % B,
                          "value": tps, "unit": "tokens/s"}), flush=True)


if __name__ == "__main__":
    main()
