//! The DeepSeek-V3.2 network: embeddings, MLA with the lightning indexer (DeepSeek Sparse
//! Attention), the sigmoid group-limited MoE, dense layers, and the LM head, written once against
//! the [`Backend`] trait.
//!
//! MLA runs in its absorbed form for prefill and decode alike: `W_UK` is folded into the query,
//! attention runs over the cached 512-d latent plus the 64-d rope key (multi-query style), and
//! `W_UV` is applied to the attended latent. One code path keeps prefill and decode identical.

use crate::backend::{Backend, RopeStyle, Selection};

pub mod gate;
mod load;
use crate::cache::{KvCache, Rows};
use crate::config::{IndexerConfig, ModelConfig};
use gate::MoeGate;

/// Which positions get logits from a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    All,
    /// Only the last position (generation needs nothing else).
    Last,
}

enum QProj<B: Backend> {
    /// `q_a_proj (q_lora, hidden)`, `q_a_layernorm (q_lora)`, `q_b_proj (heads * qk_head, q_lora)`.
    LowRank {
        a: B::Weight,
        norm: B::Buf,
        b: B::Weight,
        rank: usize,
    },
    /// `q_proj (heads * qk_head, hidden)`.
    Full(B::Weight),
}

struct Indexer<B: Backend> {
    /// `(n_heads * head_dim, q_lora)`
    wq_b: B::Weight,
    /// `(head_dim, hidden)`
    wk: B::Weight,
    k_norm_weight: B::Buf,
    k_norm_bias: B::Buf,
    /// `(n_heads, hidden)`
    weights_proj: B::Weight,
}

struct Attention<B: Backend> {
    q: QProj<B>,
    /// `(kv_lora + rope, hidden)`
    kv_a: B::Weight,
    kv_norm: B::Buf,
    /// `W_UK` per head: `(heads, nope, kv_lora)`.
    w_uk: B::Weight,
    /// `W_UV` per head, transposed: `(heads, kv_lora, v)`.
    w_uv: B::Weight,
    /// `(hidden, heads * v)`
    o: B::Weight,
    indexer: Option<Indexer<B>>,
}

struct Mlp<B: Backend> {
    gate: B::Weight,
    up: B::Weight,
    down: B::Weight,
    intermediate: usize,
}

struct Moe<B: Backend> {
    /// `(experts, hidden)`; the backend routes ([`Backend::route`]).
    gate: B::Weight,
    correction_bias: Vec<f32>,
    experts: Vec<Mlp<B>>,
    shared: Option<Mlp<B>>,
}

enum Ffn<B: Backend> {
    Dense(Mlp<B>),
    Moe(Moe<B>),
}

struct Layer<B: Backend> {
    input_norm: B::Buf,
    attn: Attention<B>,
    post_norm: B::Buf,
    ffn: Ffn<B>,
}

pub struct Model<B: Backend> {
    pub config: ModelConfig,
    backend: B,
    embed: B::Buf,
    layers: Vec<Layer<B>>,
    norm: B::Buf,
    lm_head: B::Weight,
    rope_cos: B::Buf,
    rope_sin: B::Buf,
    max_positions: usize,
}

impl<B: Backend> std::fmt::Debug for Model<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("backend", &self.backend.name())
            .field("layers", &self.layers.len())
            .finish()
    }
}

/// Per layer, the positions the indexer selected for each query (`None` without an indexer).
pub type LayerSelections = Vec<Option<Vec<Vec<u32>>>>;

/// One sequence's share of a forward pass: its new tokens and the cache they extend.
pub struct Segment<'a, B: Backend> {
    pub cache: &'a mut KvCache<B>,
    pub tokens: &'a [u32],
}

struct IndexerInputs<B: Backend> {
    q: B::Buf,
    k: B::Buf,
    w: B::Buf,
}

/// Routing of one batch through the experts: for each expert, its rows and weights.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Routing {
    pub rows: Vec<Vec<usize>>,
    pub weights: Vec<Vec<f32>>,
}

impl<B: Backend> Model<B> {
    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(&self.config)
    }

    /// Runs `tokens` after what `cache` holds, appends them to it, and returns logits
    /// `(rows, vocab)` on the host, for every position or only the last.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache<B>, which: Logits) -> Vec<f32> {
        self.forward_traced(tokens, cache, which).0
    }

    /// As [`Model::forward`], and also the positions the indexer selected in each layer (for
    /// each query), when DeepSeek Sparse Attention ran.
    pub fn forward_traced(
        &self,
        tokens: &[u32],
        cache: &mut KvCache<B>,
        which: Logits,
    ) -> (Vec<f32>, LayerSelections) {
        let mut segments = [Segment { cache, tokens }];
        let (logits, mut traces) = self.run(&mut segments, which);
        (logits, traces.pop().unwrap_or_default())
    }

    /// One forward pass over several sequences at once (continuous batching): the projections,
    /// experts and LM head see every row together, so each weight is read once per step; only
    /// attention runs per sequence, against its own cache. With [`Logits::Last`], one row of
    /// logits per segment.
    pub fn forward_batch(&self, segments: &mut [Segment<'_, B>], which: Logits) -> Vec<f32> {
        self.run(segments, which).0
    }

    fn run(
        &self,
        segments: &mut [Segment<'_, B>],
        which: Logits,
    ) -> (Vec<f32>, Vec<LayerSelections>) {
        let b = &self.backend;
        let c = &self.config;
        let mut tokens = Vec::new();
        let mut positions = Vec::new();
        let mut ranges = Vec::with_capacity(segments.len());
        for seg in segments.iter() {
            let start = seg.cache.len();
            assert!(
                start + seg.tokens.len() <= self.max_positions,
                "sequence longer than max_position_embeddings"
            );
            ranges.push(tokens.len()..tokens.len() + seg.tokens.len());
            tokens.extend_from_slice(seg.tokens);
            positions.extend(start..start + seg.tokens.len());
        }
        let n = tokens.len();
        let mut h = b.embed(&self.embed, &tokens, c.hidden_size);
        let mut traces: Vec<LayerSelections> =
            vec![Vec::with_capacity(self.layers.len()); segments.len()];
        for (li, layer) in self.layers.iter().enumerate() {
            let x = b.rms_norm(&h, &layer.input_norm, c.hidden_size, c.rms_norm_eps);
            let attn = self.attention(
                &layer.attn,
                li,
                &x,
                segments,
                &ranges,
                &positions,
                &mut traces,
            );
            b.add_assign(&mut h, &attn);
            let x = b.rms_norm(&h, &layer.post_norm, c.hidden_size, c.rms_norm_eps);
            let ffn = match &layer.ffn {
                Ffn::Dense(mlp) => self.mlp(mlp, &x, n),
                Ffn::Moe(moe) => self.moe(moe, &x, n),
            };
            b.add_assign(&mut h, &ffn);
        }
        for (seg, range) in segments.iter_mut().zip(&ranges) {
            seg.cache.advance(range.len());
        }
        let (h, rows) = match which {
            Logits::All => (h, n),
            Logits::Last => {
                let last: Vec<usize> = ranges.iter().map(|r| r.end - 1).collect();
                (b.gather_rows(&h, &last, c.hidden_size), last.len())
            }
        };
        let h = b.rms_norm(&h, &self.norm, c.hidden_size, c.rms_norm_eps);
        let logits = b.matmul(&h, &self.lm_head, rows, c.hidden_size, c.vocab_size);
        (b.download(&logits), traces)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        a: &Attention<B>,
        layer: usize,
        x: &B::Buf,
        segments: &mut [Segment<'_, B>],
        ranges: &[std::ops::Range<usize>],
        positions: &[usize],
        traces: &mut [LayerSelections],
    ) -> B::Buf {
        let b = &self.backend;
        let c = &self.config;
        let n = positions.len();
        let (heads, nope, rope, v, r) = (
            c.num_heads,
            c.qk_nope_head_dim,
            c.qk_rope_head_dim,
            c.v_head_dim,
            c.kv_lora_rank,
        );
        let qk = nope + rope;
        // Projections for every row of every sequence at once.
        let (q, q_latent) = match &a.q {
            QProj::LowRank {
                a: qa,
                norm,
                b: qb,
                rank,
            } => {
                let qr = b.rms_norm(
                    &b.matmul(x, qa, n, c.hidden_size, *rank),
                    norm,
                    *rank,
                    c.rms_norm_eps,
                );
                (b.matmul(&qr, qb, n, *rank, heads * qk), Some((qr, *rank)))
            }
            QProj::Full(w) => (b.matmul(x, w, n, c.hidden_size, heads * qk), None),
        };
        let q_nope = b.slice_cols(&q, heads * qk, heads, 0, nope);
        let mut q_pe = b.slice_cols(&q, heads * qk, heads, nope, rope);
        b.rope(
            &mut q_pe,
            heads,
            rope,
            rope,
            positions,
            &self.rope_cos,
            &self.rope_sin,
            RopeStyle::Interleaved,
        );
        let kv = b.matmul(x, &a.kv_a, n, c.hidden_size, r + rope);
        let latent = b.rms_norm(
            &b.slice_cols(&kv, r + rope, 1, 0, r),
            &a.kv_norm,
            r,
            c.rms_norm_eps,
        );
        let mut k_pe = b.slice_cols(&kv, r + rope, 1, r, rope);
        b.rope(
            &mut k_pe,
            1,
            rope,
            rope,
            positions,
            &self.rope_cos,
            &self.rope_sin,
            RopeStyle::Interleaved,
        );
        let q_lat = b.head_matmul(&q_nope, &a.w_uk, n, heads, nope, r);
        let indexer_inputs = match (&a.indexer, &c.indexer, &q_latent) {
            (Some(ix), Some(cfg), Some((qr, rank))) => {
                Some(self.indexer_inputs(ix, cfg, x, qr, *rank, positions))
            }
            _ => None,
        };

        // Attention proper, per sequence against its own cache.
        let single = segments.len() == 1;
        let mut parts = Vec::with_capacity(segments.len());
        for (si, (seg, range)) in segments.iter_mut().zip(ranges).enumerate() {
            let rows: Vec<usize> = range.clone().collect();
            let pick = |buf: &B::Buf, width: usize| {
                if single {
                    None
                } else {
                    Some(b.gather_rows(buf, &rows, width))
                }
            };
            let cached = seg.cache.len() + range.len();
            seg.cache.write(
                b,
                layer,
                &Rows {
                    latent: &latent,
                    k_pe: &k_pe,
                    index_k: indexer_inputs.as_ref().map(|i| &i.k),
                    first: range.start,
                    n: range.len(),
                },
            );
            let cache = &*seg.cache;
            let seg_positions = &positions[range.clone()];
            let selected = match (&indexer_inputs, &c.indexer) {
                (Some(inputs), Some(cfg)) => {
                    let (iq, iw) = if single {
                        (None, None)
                    } else {
                        (
                            Some(b.gather_rows(&inputs.q, &rows, cfg.n_heads * cfg.head_dim)),
                            Some(b.gather_rows(&inputs.w, &rows, cfg.n_heads)),
                        )
                    };
                    let scale = (cfg.head_dim as f32).powf(-0.5) * (cfg.n_heads as f32).powf(-0.5);
                    let scores = b.indexer_scores(
                        iq.as_ref().unwrap_or(&inputs.q),
                        iw.as_ref().unwrap_or(&inputs.w),
                        &cache.index_k(layer, cached),
                        cfg.n_heads,
                        cfg.head_dim,
                        seg_positions,
                        scale,
                    );
                    Some(b.topk(&scores, cached, cfg.topk))
                }
                _ => None,
            };
            let selection = match &selected {
                Some(sel) => Selection::Sparse(sel),
                None => Selection::Causal,
            };
            let own_q_lat = pick(&q_lat, heads * r);
            let own_q_pe = pick(&q_pe, heads * rope);
            parts.push(b.mla_attention(
                own_q_lat.as_ref().unwrap_or(&q_lat),
                own_q_pe.as_ref().unwrap_or(&q_pe),
                &cache.latent(layer, cached),
                &cache.k_pe(layer, cached),
                heads,
                r,
                rope,
                seg_positions,
                selection,
                c.attention_scale(),
            ));
            traces[si].push(selected);
        }
        let o_lat = if single {
            parts.pop().expect("one part")
        } else {
            b.concat_rows(&parts)
        };
        let o = b.head_matmul(&o_lat, &a.w_uv, n, heads, r, v);
        b.matmul(&o, &a.o, n, heads * v, c.hidden_size)
    }

    /// The lightning indexer's per-row inputs: rotated queries `(n, heads, d)`, normalised and
    /// rotated keys `(n, d)`, and head weights `(n, heads)`.
    fn indexer_inputs(
        &self,
        ix: &Indexer<B>,
        cfg: &IndexerConfig,
        x: &B::Buf,
        qr: &B::Buf,
        rank: usize,
        positions: &[usize],
    ) -> IndexerInputs<B> {
        let b = &self.backend;
        let c = &self.config;
        let n = positions.len();
        let (heads, d, rope) = (cfg.n_heads, cfg.head_dim, c.qk_rope_head_dim);
        let mut q = b.matmul(qr, &ix.wq_b, n, rank, heads * d);
        b.rope(
            &mut q,
            heads,
            d,
            rope,
            positions,
            &self.rope_cos,
            &self.rope_sin,
            RopeStyle::HalfSplit,
        );
        let k = b.matmul(x, &ix.wk, n, c.hidden_size, d);
        let mut k = b.layer_norm(&k, &ix.k_norm_weight, &ix.k_norm_bias, d, 1e-6);
        b.rope(
            &mut k,
            1,
            d,
            rope,
            positions,
            &self.rope_cos,
            &self.rope_sin,
            RopeStyle::HalfSplit,
        );
        let w = b.matmul(x, &ix.weights_proj, n, c.hidden_size, heads);
        IndexerInputs { q, k, w }
    }

    fn mlp(&self, mlp: &Mlp<B>, x: &B::Buf, n: usize) -> B::Buf {
        let b = &self.backend;
        let hidden = self.config.hidden_size;
        let gate = b.matmul(x, &mlp.gate, n, hidden, mlp.intermediate);
        let up = b.matmul(x, &mlp.up, n, hidden, mlp.intermediate);
        b.matmul(
            &b.silu_mul(&gate, &up),
            &mlp.down,
            n,
            mlp.intermediate,
            hidden,
        )
    }

    fn moe(&self, moe: &Moe<B>, x: &B::Buf, n: usize) -> B::Buf {
        let b = &self.backend;
        let c = &self.config;
        let cfg = c.moe.as_ref().expect("a MoE layer has a MoE config");
        let logits = b.matmul(x, &moe.gate, n, c.hidden_size, cfg.n_routed_experts);
        let mut routing = Routing {
            rows: vec![Vec::new(); cfg.n_routed_experts],
            weights: vec![Vec::new(); cfg.n_routed_experts],
        };
        for (t, chosen) in b
            .route(
                &logits,
                &MoeGate {
                    bias: &moe.correction_bias,
                    config: cfg,
                },
            )
            .into_iter()
            .enumerate()
        {
            for (e, w) in chosen {
                routing.rows[e].push(t);
                routing.weights[e].push(w);
            }
        }
        let mut out = match &moe.shared {
            Some(shared) => self.mlp(shared, x, n),
            None => b.upload(&vec![0.0; n * c.hidden_size]),
        };
        for (e, expert) in moe.experts.iter().enumerate() {
            let rows = &routing.rows[e];
            if rows.is_empty() {
                continue;
            }
            let xe = b.gather_rows(x, rows, c.hidden_size);
            let ye = self.mlp(expert, &xe, rows.len());
            b.scatter_add_rows(&mut out, &ye, rows, &routing.weights[e], c.hidden_size);
        }
        out
    }
}
