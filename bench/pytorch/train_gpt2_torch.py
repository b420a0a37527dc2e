#!/usr/bin/env python3
"""PyTorch reference for bench_gpu_train: GPT-2 124M training throughput.

The same model as Flywheel's engine (12 layers, 12 heads, 768 wide, context
1024, vocabulary 50257 padded to 50304, tied LM head, GELU tanh, pre-LN) in
plain PyTorch with the usual fast settings: BF16 autocast, torch.compile,
SDPA (flash attention, is_causal=True), fused AdamW, TF32 matmuls allowed.
Random weights and tokens, sequence 1024; the batch is the first of
64, 48, 32, ... that fits (or --batch). Timed: --steps full steps
(zero_grad, forward, backward, AdamW) after 3 warm-up steps (compilation).

Prints the same JSON lines as bench_gpu_train:
  {"bench": "torch_train", "metric": ..., "value": ..., "unit": ...}
MFU uses the same two FLOP counts (llm.c 6N + 6LCT, PaLM 6N + 12LCT, N =
all parameters incl. the padded embedding and position table) and the H100
BF16 dense peak 989 TFLOP/s (--peak-tflops to change).

Run it on the same GPU in the same session as build/bench/bench_gpu_train:
  python3 bench/pytorch/train_gpt2_torch.py
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.c_fcproj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q = q.view(B, T, self.NH, C // self.NH).transpose(1, 2)
        k = k.view(B, T, self.NH, C // self.NH).transpose(1, 2)
        v = v.view(B, T, self.NH, C // self.NH).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.c_fcproj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, L=12, NH=12, C=768, ctx=1024, Vp=50304):
        super().__init__()
        self.wte = nn.Embedding(Vp, C)
        self.wpe = nn.Embedding(ctx, C)
        self.h = nn.ModuleList([Block(C, NH) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C)
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                s = std / math.sqrt(2 * L) if name.endswith(("c_proj.weight", "c_fcproj.weight")) else std
                nn.init.normal_(p, 0.0, s)
            elif "ln" in name and name.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for blk in self.h:
            x = blk(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


def emit(metric, value, unit):
    print(json.dumps({"bench": "torch_train", "metric": metric, "value": value, "unit": unit}),
          flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev = "cuda"
    T, V = 1024, 50257
    model = GPT2().to(dev)
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1, fused=True)
    step_model = model if args.no_compile else torch.compile(model)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    batches = [args.batch] if args.batch else [64, 48, 32, 24, 16, 8, 4, 2, 1]
    B = 0
    for b in batches:
        try:
            x = torch.randint(0, V, (b, T), device=dev)
            y = torch.randint(0, V, (b, T), device=dev)
            for _ in range(3):  # compile + warm-up
                step(x, y)
            torch.cuda.synchronize()
            B = b
            break
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
    if not B:
        raise SystemExit("no batch fits")
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(x, y)
    torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    tps = B * T * args.steps / sec
    L, C = 12, 768
    emit("batch", B, "rows")
    emit("tokens_per_s_gpt2_124m_t1024_bf16", tps, "tokens/s")
    emit("step_time", sec / args.steps * 1e3, "ms")
    emit("mfu_llmc_6N_6LCT", 100 * tps * (6 * nparams + 6 * L * C * T) / (args.peak_tflops * 1e12), "%")
    emit("mfu_palm_6N_12LCT", 100 * tps * (6 * nparams + 12 * L * C * T) / (args.peak_tflops * 1e12), "%")
    print(json.dumps({"bench": "torch_train", "metric": "versions", "value": 0, "unit":
                      "torch %s cuda %s gpu %s" % (torch.__version__, torch.version.cuda,
                                                   torch.cuda.get_device_name())}), flush=True)


if __name__ == "__main__":
    main()
