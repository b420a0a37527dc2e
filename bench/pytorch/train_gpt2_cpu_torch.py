#!/usr/bin/env python3
"""PyTorch-on-CPU peer for bench_engine_train and bench_engine_infer.

The same GPT-2 as Flywheel's engine (pre-LN blocks, causal attention via
F.scaled_dot_product_attention, GELU tanh, tied LM head, vocabulary 50257
padded to 50304 = round up to 128 as fw_model_config_check does; the logits
are computed over the padded vocabulary and the loss / argmax over the real
50257, as the engine does) in plain FP32 PyTorch, for the engine's presets:
  small      4 layers,  4 heads, 256 wide, context  256
  gpt2-124m 12 layers, 12 heads, 768 wide, context 1024
on torch.set_num_threads(1) and (2), random weights and random tokens.

Training (bench "torch_cpu_train"): batch 4 x sequence 64, one warm-up step
then timed full steps (zero grad, forward, backward, grad clip 1.0, AdamW
lr 3e-4 betas 0.9/0.95 eps 1e-8, weight decay 0.1 on every >= 2-D tensor:
the matrices and both embedding tables, as the engine decays them);
2 timed steps for gpt2-124m and 5 for small, as the C bench. GFLOP/s uses the
C bench's llm.c count: 6N + 6*L*C*T per token, N = all parameters.

Inference (bench "torch_cpu_infer"), eval mode under torch.inference_mode:
  - embedding: a 32-token sentence at a time, forward to ln_f, mean pool,
    L2 norm: sentences/s over >= 1 s after a warm-up;
  - generation: a 16-token prompt prefilled into a preallocated KV cache,
    then 64 tokens greedily (the first from the prefill's logits, 63 decode
    steps of one token each): decode tokens/s, end-to-end tokens/s and the
    prefill time, over >= 1 s of runs after a warm-up run.

--compile runs the same figures through torch.compile (inductor) and names
the benches "torch_cpu_train_compile" / "torch_cpu_infer_compile".
Metric names are the C benches' own, so the lines pair up one to one.

  /work/.venv-torch/bin/python bench/pytorch/train_gpt2_cpu_torch.py [--compile]
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {"small": (4, 4, 256, 256), "gpt2-124m": (12, 12, 768, 1024)}
V = 50257
VP = (V + 127) // 128 * 128
BB, BT = 4, 64
EMBED_LEN, PROMPT_LEN, GEN_TOKENS = 32, 16, 64


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

    def _qkv(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        hs = C // self.NH
        return [t.view(B, T, self.NH, hs).transpose(1, 2) for t in (q, k, v)]

    def _rest(self, x, y):
        B, T, C = x.shape
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.c_fcproj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    def forward(self, x):
        q, k, v = self._qkv(x)
        return self._rest(x, F.scaled_dot_product_attention(q, k, v, is_causal=True))

    def forward_cached(self, x, kc, vc, pos):
        """x: [1, T, C] at positions pos..pos+T-1; kc, vc: [1, NH, maxlen, hs]."""
        T = x.shape[1]
        q, k, v = self._qkv(x)
        kc[:, :, pos:pos + T] = k
        vc[:, :, pos:pos + T] = v
        K, Vv = kc[:, :, :pos + T], vc[:, :, :pos + T]
        # A single new token sees every cached one: no mask. A prefill from
        # position 0 is plain causal attention.
        y = F.scaled_dot_product_attention(q, K, Vv, is_causal=(T > 1))
        return self._rest(x, y)


class GPT2(nn.Module):
    def __init__(self, L, NH, C, ctx):
        super().__init__()
        self.L, self.NH, self.C = L, NH, C
        self.wte = nn.Embedding(VP, C)
        self.wpe = nn.Embedding(ctx, C)
        self.h = nn.ModuleList([Block(C, NH) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                s = 0.02 / math.sqrt(2 * L) if name.endswith(("c_proj.weight",
                                                               "c_fcproj.weight")) else 0.02
                nn.init.normal_(p, 0.0, s)
            elif "ln" in name and name.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)
        with torch.no_grad():
            self.wte.weight[V:].zero_()  # padded rows are 0, as in the engine

    def hidden(self, idx):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for blk in self.h:
            x = blk(x)
        return self.ln_f(x)

    def forward(self, idx, targets):
        logits = F.linear(self.hidden(idx), self.wte.weight)  # tied head, [B, T, VP]
        return F.cross_entropy(logits[..., :V].reshape(-1, V), targets.reshape(-1))

    def embed(self, idx):
        e = self.hidden(idx).mean(dim=1)
        return F.normalize(e, dim=-1)

    def step_cached(self, idx, caches, pos):
        """Logits [V] of the last of idx ([1, T], positions pos..), filling caches."""
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(pos, pos + T))
        for blk, (kc, vc) in zip(self.h, caches):
            x = blk.forward_cached(x, kc, vc, pos)
        x = self.ln_f(x[:, -1])
        return F.linear(x, self.wte.weight)[0, :V]


def emit(bench, metric, value, unit):
    print(json.dumps({"bench": bench, "metric": metric, "value": float("%.6g" % value),
                      "unit": unit}), flush=True)


def make_adamw(model):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    nodecay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}]
    kw = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    try:
        return torch.optim.AdamW(groups, fused=True, **kw), "fused"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, **kw), "default"


def bench_train(preset, threads, steps, compile_, bench):
    L, NH, C, ctx = PRESETS[preset]
    torch.manual_seed(1)
    model = GPT2(L, NH, C, ctx)
    opt, kind = make_adamw(model)
    fwd = torch.compile(model) if compile_ else model
    g = torch.Generator().manual_seed(88172645463325252 & 0x7FFFFFFFFFFFFFFF)
    x = torch.randint(0, V, (BB, BT), generator=g)
    y = torch.roll(x.reshape(-1), -1).reshape(BB, BT)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    t0 = time.perf_counter()
    step()  # warm-up (and compilation)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    secs = time.perf_counter() - t0
    tps = steps * BB * BT / secs
    n = sum(p.numel() for p in model.parameters())
    per_token = 6.0 * n + 6.0 * L * C * BT
    emit(bench, "%s_b%d_t%d_threads%d_tokens_per_s" % (preset, BB, BT, threads), tps, "tokens/s")
    emit(bench, "%s_threads%d_gflops" % (preset, threads), tps * per_token / 1e9, "GFLOP/s")
    emit(bench, "%s_threads%d_warmup_s" % (preset, threads), warm, "s")
    return kind


def bench_infer(preset, threads, compile_, bench, quick):
    L, NH, C, ctx = PRESETS[preset]
    torch.manual_seed(1)
    model = GPT2(L, NH, C, ctx).eval()
    g = torch.Generator().manual_seed(0x1E3779B97F4A7C15)
    embed = torch.compile(model.embed) if compile_ else model.embed
    with torch.inference_mode():
        embed(torch.randint(0, V, (1, EMBED_LEN), generator=g))  # warm-up
        n, t0, el = 0, time.perf_counter(), 0.0
        while (n < 3 or (el < 1.0 and not quick)) and n < 10000:
            embed(torch.randint(0, V, (1, EMBED_LEN), generator=g))
            n += 1
            el = time.perf_counter() - t0
        emit(bench, "%s_embed_t%d_threads%d_sentences_per_s" % (preset, EMBED_LEN, threads),
             n / el, "sentences/s")

        hs, maxlen = C // NH, PROMPT_LEN + GEN_TOKENS
        caches = [(torch.zeros(1, NH, maxlen, hs), torch.zeros(1, NH, maxlen, hs))
                  for _ in range(L)]
        # Compiling the cached step would recompile per position (the cache
        # slice lengths change); the generation figures stay eager.
        def once():
            prompt = torch.randint(0, V, (1, PROMPT_LEN), generator=g)
            a = time.perf_counter()
            logits = model.step_cached(prompt, caches, 0)
            b = time.perf_counter()
            pos = PROMPT_LEN
            for i in range(GEN_TOKENS):
                tok = int(torch.argmax(logits))
                if i + 1 < GEN_TOKENS:
                    logits = model.step_cached(torch.tensor([[tok]]), caches, pos)
                    pos += 1
            return b - a, time.perf_counter() - b

        once()  # warm-up
        tp = td = 0.0
        runs = 0
        while (runs < 1 or (tp + td < 1.0 and not quick)) and runs < 100:
            p, d = once()
            tp, td, runs = tp + p, td + d, runs + 1
        emit(bench, "%s_generate_b1_threads%d_decode_tokens_per_s" % (preset, threads),
             runs * (GEN_TOKENS - 1) / td, "tokens/s")
        emit(bench, "%s_generate_b1_p%d_n%d_threads%d_tokens_per_s"
             % (preset, PROMPT_LEN, GEN_TOKENS, threads), runs * GEN_TOKENS / (tp + td),
             "tokens/s")
        emit(bench, "%s_prefill_p%d_threads%d_ms" % (preset, PROMPT_LEN, threads),
             1e3 * tp / runs, "ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compile", action="store_true", help="torch.compile (inductor)")
    ap.add_argument("--only", choices=["train", "infer"], help="one of the two benches")
    ap.add_argument("--presets", default="gpt2-124m,small")
    ap.add_argument("--quick", action="store_true", help="one timed step / few iterations")
    args = ap.parse_args()
    sfx = "_compile" if args.compile else ""
    torch.set_num_interop_threads(1)
    presets = args.presets.split(",")
    kind = "?"
    if args.only != "infer":
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for p in presets:
                steps = 1 if args.quick else (2 if p == "gpt2-124m" else 5)
                kind = bench_train(p, threads, steps, args.compile, "torch_cpu_train" + sfx)
    if args.only != "train":
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for p in reversed(presets):  # small first, as bench_engine_infer
                bench_infer(p, threads, args.compile, "torch_cpu_infer" + sfx, args.quick)
    print(json.dumps({"bench": "torch_cpu_train" + sfx, "metric": "versions", "value": 0,
                      "unit": "torch %s python %s adamw %s mkldnn %s" % (
                          torch.__version__, sys.version.split()[0], kind,
                          torch.backends.mkldnn.is_available())}), flush=True)


if __name__ == "__main__":
    main()
