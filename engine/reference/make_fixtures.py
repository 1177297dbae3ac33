#!/usr/bin/env python3
"""Generate tiny random DeepSeek-V3 / V3.2 checkpoints (Hugging Face layout) and
their reference logits, computed with Apple's mlx-lm on CPU in float32.

Usage:  python engine/reference/make_fixtures.py OUT_DIR

For every fixture it writes OUT_DIR/<name>/ with
  config.json          Hugging Face style config (model_type deepseek_v32 / deepseek_v3)
  model.safetensors    random weights, HF tensor names, [out, in] Linear layout
  tokens.json          {"tokens": [...]}  (one prompt, processed as a single prefill)
  logits.safetensors   "logits": float32 [seq_len, vocab] from mlx-lm
  indexer_topk.json    (V3.2 only) JSON array [layer][query position] -> sorted
                       key positions the lightning indexer kept (always <= t;
                       all of 0..=t while t + 1 <= index_topk)
  meta.json            what the fixture checks, versions, selection margins

Everything is deterministic (fixed numpy seeds; mlx's own random init is
always overwritten by a strict load_weights).  See README.md next to this file.
"""

import copy
import json
import math
import os
import struct
import sys

import ml_dtypes
import numpy as np

import mlx.core as mx
from mlx_lm.models import deepseek_v3 as dsv3
from mlx_lm.models import deepseek_v32 as dsv32

mx.set_default_device(mx.cpu)

# DeepSeek's reference (inference/model.py) and transformers' deepseek_v32 use
# LayerNorm(eps=1e-6) for the indexer key norm; mlx-lm builds nn.LayerNorm with
# its default eps=1e-5.  We set 1e-6 on the mlx model so the fixtures follow the
# official model (the effect is ~1e-6 relative; see meta.json "k_norm_eps").
INDEXER_K_NORM_EPS = 1e-6

# Fixtures are rejected if a top-k decision is closer than this (relative to the
# largest |score| of that row for the indexer; absolute for the MoE gate).
MIN_REL_GAP = 5e-4
MIN_GATE_GAP = 2e-4



class NearTie(Exception):
    """A top-k decision of this random draw is too close to call; the caller
    retries with the next weight seed (deterministically)."""


FP8_BLOCK = 128
FP8_MAX = 448.0

BASE_CONFIG = {
    "architectures": ["DeepseekV32ForCausalLM"],
    "model_type": "deepseek_v32",
    "vocab_size": 256,
    "hidden_size": 64,
    # > 128 and not a multiple of 128, so the dense MLP weights span several
    # (partial) 128x128 FP8 tiles in the tiny_v32_fp8 fixture.
    "intermediate_size": 160,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 3,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "q_lora_rank": 32,
    "kv_lora_rank": 32,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8,
    "v_head_dim": 16,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "n_group": 4,
    "topk_group": 2,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "norm_topk_prob": True,
    "ep_size": 1,
    # 8 heads (not 4): with few heads, relu(q.k) is 0 for every head of some
    # (query, key) pairs and exact ties at score 0 land on the top-k boundary.
    "index_n_heads": 8,
    "index_head_dim": 32,
    "index_topk": 4,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000,
    "max_position_embeddings": 1024,
    "rope_scaling": {
        "type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 256,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    },
    "attention_bias": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "num_nextn_predict_layers": 0,
    "tie_word_embeddings": False,
    "use_cache": True,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "torch_dtype": "float32",
}

INDEXER_KEYS = ("index_n_heads", "index_head_dim", "index_topk")


# --------------------------------------------------------------------------
# Random weights in Hugging Face naming
# --------------------------------------------------------------------------

def make_weights(cfg, seed):
    """Ordered dict name -> float32 ndarray, HF names, Linear weights [out, in]."""
    rng = np.random.default_rng(seed)
    W = {}

    def lin(name, out_f, in_f):
        W[name] = (rng.standard_normal((out_f, in_f)) / math.sqrt(in_f)).astype(np.float32)

    def norm(name, n):
        W[name] = (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    H, V = cfg["hidden_size"], cfg["vocab_size"]
    nh = cfg["num_attention_heads"]
    qk_head = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    W["model.embed_tokens.weight"] = rng.standard_normal((V, H)).astype(np.float32)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        norm(p + "input_layernorm.weight", H)
        a = p + "self_attn."
        lin(a + "q_a_proj.weight", cfg["q_lora_rank"], H)
        norm(a + "q_a_layernorm.weight", cfg["q_lora_rank"])
        lin(a + "q_b_proj.weight", nh * qk_head, cfg["q_lora_rank"])
        lin(a + "kv_a_proj_with_mqa.weight", cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"], H)
        norm(a + "kv_a_layernorm.weight", cfg["kv_lora_rank"])
        lin(a + "kv_b_proj.weight", nh * (cfg["qk_nope_head_dim"] + cfg["v_head_dim"]), cfg["kv_lora_rank"])
        lin(a + "o_proj.weight", H, nh * cfg["v_head_dim"])
        ih, idim = cfg["index_n_heads"], cfg["index_head_dim"]
        lin(a + "indexer.wq_b.weight", ih * idim, cfg["q_lora_rank"])
        lin(a + "indexer.wk.weight", idim, H)
        norm(a + "indexer.k_norm.weight", idim)
        W[a + "indexer.k_norm.bias"] = (0.1 * rng.standard_normal(idim)).astype(np.float32)
        lin(a + "indexer.weights_proj.weight", ih, H)
        norm(p + "post_attention_layernorm.weight", H)
        m = p + "mlp."
        if l < cfg["first_k_dense_replace"]:
            lin(m + "gate_proj.weight", cfg["intermediate_size"], H)
            lin(m + "up_proj.weight", cfg["intermediate_size"], H)
            lin(m + "down_proj.weight", H, cfg["intermediate_size"])
        else:
            E, I = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
            lin(m + "gate.weight", E, H)
            # Non-zero bias: changes which experts are selected (checked below),
            # but is kept mostly positive so biased scores of the kept groups stay
            # > 0 (mlx-lm/HF-v3 zero-fill vs DeepSeek -inf-fill; checked below).
            W[m + "gate.e_score_correction_bias"] = rng.uniform(-0.1, 0.4, E).astype(np.float32)
            for e in range(E):
                lin(m + f"experts.{e}.gate_proj.weight", I, H)
                lin(m + f"experts.{e}.up_proj.weight", I, H)
                lin(m + f"experts.{e}.down_proj.weight", H, I)
            S = I * cfg["n_shared_experts"]
            lin(m + "shared_experts.gate_proj.weight", S, H)
            lin(m + "shared_experts.up_proj.weight", S, H)
            lin(m + "shared_experts.down_proj.weight", H, S)
    norm("model.norm.weight", H)
    lin("lm_head.weight", V, H)
    return W


FP8_SUFFIXES = (
    "self_attn.q_a_proj.weight",
    "self_attn.q_b_proj.weight",
    "self_attn.kv_a_proj_with_mqa.weight",
    "self_attn.kv_b_proj.weight",
    "self_attn.o_proj.weight",
    "self_attn.indexer.wq_b.weight",
    "self_attn.indexer.wk.weight",
    "gate_proj.weight",
    "up_proj.weight",
    "down_proj.weight",
)


def is_fp8_weight(name):
    return name.startswith("model.layers.") and name.endswith(FP8_SUFFIXES)


def quantize_fp8(w):
    """Block-wise e4m3 like DeepSeek's checkpoints: per 128x128 tile,
    scale_inv = amax / 448 (float32), q = e4m3(w / scale_inv) (round to nearest
    even), dequantised = float32(q) * scale_inv.  Returns (q, scale_inv, deq)."""
    out_f, in_f = w.shape
    bo, bi = -(-out_f // FP8_BLOCK), -(-in_f // FP8_BLOCK)
    scale = np.zeros((bo, bi), np.float32)
    q = np.zeros(w.shape, ml_dtypes.float8_e4m3fn)
    deq = np.zeros(w.shape, np.float32)
    for i in range(bo):
        for j in range(bi):
            sl = (slice(i * FP8_BLOCK, (i + 1) * FP8_BLOCK), slice(j * FP8_BLOCK, (j + 1) * FP8_BLOCK))
            tile = w[sl]
            amax = float(np.abs(tile).max())
            s = np.float32(amax / FP8_MAX) if amax > 0 else np.float32(1.0)
            qt = (tile / s).astype(ml_dtypes.float8_e4m3fn)
            assert not np.isnan(qt.astype(np.float32)).any()
            scale[i, j] = s
            q[sl] = qt
            deq[sl] = qt.astype(np.float32) * s
    return q, scale, deq


# --------------------------------------------------------------------------
# safetensors writer (F32 and F8_E4M3), deterministic byte layout
# --------------------------------------------------------------------------

def write_safetensors(path, tensors, metadata=None):
    header = {}
    blobs = []
    off = 0
    for name, arr in tensors.items():
        if arr.dtype == np.float32:
            dt = "F32"
        elif arr.dtype == ml_dtypes.float8_e4m3fn:
            dt = "F8_E4M3"
        else:
            raise TypeError(f"{name}: {arr.dtype}")
        b = np.ascontiguousarray(arr).tobytes()  # little-endian on this host
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# --------------------------------------------------------------------------
# Recording hooks (indexer selections, MoE gate inputs)
# --------------------------------------------------------------------------

RECORD = {"indexer": {}, "gate": {}}


def _indexer_scores(self, x, qr, mask):
    """Identical arithmetic to mlx_lm deepseek_v32.Indexer.__call__ (no cache)."""
    b, s, _ = x.shape
    q = self.wq_b(qr).reshape(b, s, self.n_heads, self.head_dim).swapaxes(1, 2)
    k = self.k_norm(self.wk(x)).reshape(b, 1, s, self.head_dim)
    q = self.rope(q, offset=0)
    k = self.rope(k, offset=0)
    scores = mx.maximum(q @ k.swapaxes(-1, -2), 0)
    weights = self.weights_proj(x) * (self.n_heads**-0.5 * self.softmax_scale)
    scores = (scores * weights.swapaxes(-1, -2)[..., None]).sum(axis=1)  # [b, s, s]
    return scores


_orig_indexer_call = dsv32.Indexer.__call__


def _recording_indexer_call(self, x, qr, mask, cache=None):
    out = _orig_indexer_call(self, x, qr, mask, cache)
    assert cache is None and x.shape[0] == 1
    L = x.shape[1]
    scores = np.array(_indexer_scores(self, x, qr, mask))[0]
    if out is None:  # mlx-lm: key count <= index_topk -> dense attention
        sel = [list(range(t + 1)) for t in range(L)]
    else:
        idx = np.array(out)[0, 0]  # [L, topk], may contain masked (future) slots
        sel = [sorted(int(s) for s in idx[t] if s <= t) for t in range(L)]
    RECORD["indexer"][self._layer_idx] = {"sel": sel, "scores": scores}
    return out


_orig_gate_call = dsv32.MoEGate.__call__


def _recording_gate_call(self, x):
    inds, scores = _orig_gate_call(self, x)
    RECORD["gate"][self._layer_idx] = {
        "x": np.array(x)[0],
        "inds": np.array(inds)[0],
        "weights": np.array(scores)[0],
        "W": np.array(self.weight),
        "bias": np.array(self.e_score_correction_bias),
    }
    return inds, scores


dsv32.Indexer.__call__ = _recording_indexer_call
dsv32.MoEGate.__call__ = _recording_gate_call
dsv3.MoEGate.__call__ = _recording_gate_call  # same algorithm in both files


# --------------------------------------------------------------------------
# Independent numpy checks of what was recorded
# --------------------------------------------------------------------------

def check_indexer(cfg, layer_rec):
    """Selections must be causal, equal the numpy top-k of the (causally masked)
    scores, and be separated from the next candidate by a clear margin."""
    topk = cfg["index_topk"]
    min_gap = math.inf
    for t, sel in enumerate(layer_rec["sel"]):
        assert all(0 <= s <= t for s in sel)
        if t + 1 <= topk:
            assert sel == list(range(t + 1)), (t, sel)
            continue
        sc = layer_rec["scores"][t, : t + 1].astype(np.float64)
        order = np.argsort(-sc, kind="stable")
        assert sorted(order[:topk].tolist()) == sel, (t, sel, order[:topk])
        gap = sc[order[topk - 1]] - sc[order[topk]]
        min_gap = min(min_gap, gap / max(1e-12, np.abs(sc).max()))
    # no ties / near-ties at the top-k boundary, so float noise cannot flip it
    if not min_gap > MIN_REL_GAP:
        raise NearTie(f"indexer near-tie {min_gap:.2e}")
    return min_gap


def gate_reference(cfg, rec):
    """DeepSeek / transformers-v3.2 semantics (dropped groups -> -inf)."""
    x, W, bias = rec["x"].astype(np.float64), rec["W"].astype(np.float64), rec["bias"].astype(np.float64)
    E, G, TG, K = cfg["n_routed_experts"], cfg["n_group"], cfg["topk_group"], cfg["num_experts_per_tok"]
    s = 1.0 / (1.0 + np.exp(-(x @ W.T)))
    b = s + bias
    inds, wts, min_gap, n_bias_changed, n_neg = [], [], math.inf, 0, 0
    for t in range(x.shape[0]):
        g = b[t].reshape(G, E // G)
        gs = np.sort(g, axis=1)[:, ::-1][:, :2].sum(1)
        go = np.argsort(-gs, kind="stable")
        keep = go[:TG]
        masked = np.full(E, -np.inf)
        for gi in keep:
            masked[gi * (E // G):(gi + 1) * (E // G)] = b[t, gi * (E // G):(gi + 1) * (E // G)]
        eo = np.argsort(-masked, kind="stable")
        sel = eo[:K]
        n_neg += int((masked[sel] <= 0).any())
        gaps = [gs[go[TG - 1]] - gs[go[TG]], masked[eo[K - 1]] - masked[eo[K]]]
        min_gap = min(min_gap, *gaps)
        w = s[t, sel] / s[t, sel].sum() * cfg["routed_scaling_factor"]
        inds.append(sel)
        wts.append(w)
        # same selection without the correction bias?
        g0 = s[t].reshape(G, E // G)
        keep0 = np.argsort(-np.sort(g0, 1)[:, ::-1][:, :2].sum(1), kind="stable")[:TG]
        m0 = np.full(E, -np.inf)
        for gi in keep0:
            m0[gi * (E // G):(gi + 1) * (E // G)] = s[t, gi * (E // G):(gi + 1) * (E // G)]
        n_bias_changed += int(set(np.argsort(-m0, kind="stable")[:K]) != set(sel))
    return inds, wts, min_gap, n_bias_changed, n_neg


def check_gate(cfg, rec):
    inds, wts, min_gap, n_changed, n_neg = gate_reference(cfg, rec)
    for t in range(len(inds)):
        got = dict(zip(rec["inds"][t].tolist(), rec["weights"][t].tolist()))
        want = dict(zip([int(i) for i in inds[t]], wts[t].tolist()))
        assert set(got) == set(want), (t, got, want)
        for e in want:
            assert abs(got[e] - want[e]) < 1e-5, (t, got, want)
    if not min_gap > MIN_GATE_GAP:
        raise NearTie(f"gate near-tie {min_gap:.2e}")
    assert n_neg == 0, "a selected biased score is <= 0: zero-fill vs -inf-fill ambiguity"
    return min_gap, n_changed


# --------------------------------------------------------------------------
# Running mlx-lm
# --------------------------------------------------------------------------

def build_model(cfg):
    if cfg["model_type"] == "deepseek_v32":
        mod = dsv32
    elif cfg["model_type"] == "deepseek_v3":
        mod = dsv3
    else:
        raise ValueError(cfg["model_type"])
    model = mod.Model(mod.ModelArgs.from_dict(cfg))
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        if hasattr(attn, "indexer"):
            attn.indexer._layer_idx = i
            attn.indexer.k_norm.eps = INDEXER_K_NORM_EPS
        if hasattr(layer.mlp, "gate"):
            layer.mlp.gate._layer_idx = i
    return model


def run_mlx(cfg, hf_weights_f32, tokens):
    """hf_weights_f32: HF-named float32 numpy arrays.  Returns logits [L, V]."""
    model = build_model(cfg)
    w = {k: mx.array(v) for k, v in hf_weights_f32.items()}
    w = model.sanitize(w)
    model.load_weights(list(w.items()), strict=True)  # every tensor consumed, none missing
    model.eval()
    RECORD["indexer"].clear()
    RECORD["gate"].clear()
    logits = model(mx.array([tokens], dtype=mx.int32))
    logits = np.array(logits.astype(mx.float32))[0]
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    return logits


def crosscheck_mlx_loader(out, cfg, tokens, ref_logits, tol):
    """Load the written directory through mlx-lm's own loader (mx.load of
    model*.safetensors + sanitize, incl. its FP8 dequant) and compare."""
    from mlx_lm.utils import load_model

    model, _ = load_model(__import__("pathlib").Path(out), strict=True)
    for i, layer in enumerate(model.model.layers):
        if hasattr(layer.self_attn, "indexer"):
            layer.self_attn.indexer._layer_idx = i
            layer.self_attn.indexer.k_norm.eps = INDEXER_K_NORM_EPS
        if hasattr(layer.mlp, "gate"):
            layer.mlp.gate._layer_idx = i
    logits = np.array(model(mx.array([tokens], dtype=mx.int32)).astype(mx.float32))[0]
    err = float(np.abs(logits - ref_logits).max())
    assert err < tol, (out, err)
    return err


def crosscheck_fp8_file(path, deq):
    """Decode the written F8_E4M3 bytes with mlx's own e4m3 decoder and check
    fp8 * scale_inv (float32, per 128x128 tile) reproduces our dequantised
    weights bit for bit."""
    raw = mx.load(path)
    n = 0
    for name, d in deq.items():
        if name + "_scale_inv" not in raw:
            continue
        q = np.array(mx.from_fp8(raw[name], dtype=mx.float32))
        s = np.array(raw[name + "_scale_inv"])
        s_full = np.repeat(np.repeat(s, FP8_BLOCK, 0), FP8_BLOCK, 1)[: q.shape[0], : q.shape[1]]
        assert np.array_equal(q * s_full, d), name
        n += 1
    return n


def versions():
    import importlib.metadata as md

    return {p: md.version(p) for p in ("mlx", "mlx-lm", "numpy", "ml_dtypes")}


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

def tokens_for(seed, n, vocab):
    rng = np.random.default_rng(seed)
    return [0] + [int(t) for t in rng.integers(2, vocab, n - 1)]


def write_fixture(out_root, name, cfg, file_weights, run_weights, tokens, description,
                  loader_tol=1e-4, extra_meta=None):
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(out, "model.safetensors"), file_weights, {"format": "pt"})
    with open(os.path.join(out, "tokens.json"), "w") as f:
        json.dump({"tokens": tokens}, f)
        f.write("\n")

    logits = run_mlx(cfg, run_weights, tokens)
    write_safetensors(os.path.join(out, "logits.safetensors"), {"logits": logits})

    meta = {"description": description, "versions": versions(),
            "seq_len": len(tokens), "indexer_k_norm_eps": INDEXER_K_NORM_EPS}
    if cfg["model_type"] == "deepseek_v32":
        layers, gaps = [], []
        for l in range(cfg["num_hidden_layers"]):
            rec = RECORD["indexer"][l]
            gaps.append(check_indexer(cfg, rec))
            layers.append(rec["sel"])
        with open(os.path.join(out, "indexer_topk.json"), "w") as f:
            # bare JSON array: [layer][query position] -> sorted key positions
            f.write("[\n")
            f.write(",\n".join(json.dumps(l, separators=(",", ":")) for l in layers))
            f.write("\n]\n")
        meta["indexer_min_relative_gap_per_layer"] = [float(g) for g in gaps]
        sparse_rows = sum(len(s) < t + 1 for l in layers for t, s in enumerate(l))
        meta["indexer_rows_with_dropped_positions"] = int(sparse_rows)
        assert sparse_rows > 0, "sparse attention never active"
    gate_gaps, changed = [], 0
    for l in sorted(RECORD["gate"]):
        g, c = check_gate(cfg, RECORD["gate"][l])
        gate_gaps.append(float(g))
        changed += c
    meta["gate_min_gap_per_moe_layer"] = gate_gaps
    meta["tokens_whose_experts_change_due_to_bias"] = changed
    assert changed > 0, "e_score_correction_bias never changes the selection"

    if "quantization_config" in cfg:
        meta["fp8_tensors_verified_with_mx_from_fp8"] = crosscheck_fp8_file(
            os.path.join(out, "model.safetensors"), run_weights)
    err = crosscheck_mlx_loader(out, cfg, tokens, logits, loader_tol)
    meta["mlx_lm_load_model_max_abs_diff"] = err
    if extra_meta:
        meta.update(extra_meta)
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"{name}: seq_len={len(tokens)} logits std={logits.std():.3f} "
          f"loader_diff={err:.2e} bias_changed={changed}")
    return logits


def with_seed_retry(build, first_seed, tries=50):
    for seed in range(first_seed, first_seed + tries):
        try:
            return build(seed)
        except NearTie as e:
            print(f"  seed {seed}: {e}; trying next seed")
    raise RuntimeError("no seed without near-ties")


def v32_family(out_root, seed):
    """tiny_v32, tiny_v3 and tiny_v32_fp8 share one weight draw."""
    # (a) tiny_v32: every mechanism, 16 tokens, index_topk 4 -> sparse from t=4.
    cfg32 = copy.deepcopy(BASE_CONFIG)
    w32 = make_weights(cfg32, seed=seed)
    toks = tokens_for(99, 16, cfg32["vocab_size"])
    logits32 = write_fixture(
        out_root, "tiny_v32", cfg32, w32, w32, toks,
        "DeepSeek-V3.2: MLA + YaRN + lightning indexer (top-4 of 16) + noaux_tc MoE, float32.",
        extra_meta={"weight_seed": seed})

    # (b) tiny_v3: same weights without the indexer, dense MLA.
    cfg3 = copy.deepcopy(BASE_CONFIG)
    cfg3["model_type"] = "deepseek_v3"
    cfg3["architectures"] = ["DeepseekV3ForCausalLM"]
    for k in INDEXER_KEYS:
        del cfg3[k]
    w3 = {k: v for k, v in w32.items() if ".indexer." not in k}
    logits3 = write_fixture(
        out_root, "tiny_v3", cfg3, w3, w3, toks,
        "DeepSeek-V3: tiny_v32's weights minus the indexer; dense causal MLA. Rows t < index_topk "
        "equal tiny_v32's rows (same attention there).", extra_meta={"weight_seed": seed})
    k = cfg32["index_topk"]
    assert np.abs(logits3[:k] - logits32[:k]).max() < 1e-4
    assert np.abs(logits3[k:] - logits32[k:]).max() > 1e-2

    # (c) tiny_v32_fp8: tiny_v32's weights stored as block-scaled e4m3.
    cfg8 = copy.deepcopy(BASE_CONFIG)
    cfg8["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3",
                                   "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
    file8, deq8, n_q = {}, {}, 0
    for name, w in w32.items():
        if is_fp8_weight(name):
            q, s, d = quantize_fp8(w)
            file8[name] = q
            file8[name + "_scale_inv"] = s
            deq8[name] = d
            n_q += 1
        else:
            file8[name] = w
            deq8[name] = w
    # mlx-lm's own FP8 sanitize dequantises to bfloat16, so its loader
    # cross-check only agrees to bf16 accuracy.
    write_fixture(
        out_root, "tiny_v32_fp8", cfg8, file8, deq8, toks,
        "tiny_v32 with every attention/indexer(wq_b,wk)/MLP/expert Linear stored as float8_e4m3fn "
        "plus float32 weight_scale_inv per 128x128 tile; logits from the float32 dequantised weights.",
        loader_tol=1e-1, extra_meta={"fp8_tensors": n_q, "weight_seed": seed})


def v32_long(out_root, seed):
    # (d) tiny_v32_long: 2 layers, 40 tokens, index_topk 6: sparse on most rows.
    cfgL = copy.deepcopy(BASE_CONFIG)
    cfgL["num_hidden_layers"] = 2
    cfgL["index_topk"] = 6
    cfgL["intermediate_size"] = 96  # keep the fixture small
    wL = make_weights(cfgL, seed=seed)
    toksL = tokens_for(77, 40, cfgL["vocab_size"])
    write_fixture(
        out_root, "tiny_v32_long", cfgL, wL, wL, toksL,
        "DeepSeek-V3.2, 2 layers (dense + MoE), 40 tokens with index_topk 6.",
        extra_meta={"weight_seed": seed})


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_root = sys.argv[1]
    os.makedirs(out_root, exist_ok=True)
    with_seed_retry(lambda s: v32_family(out_root, s), 1235)
    with_seed_retry(lambda s: v32_long(out_root, s), 4321)


if __name__ == "__main__":
    main()
