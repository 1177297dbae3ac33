//! Loading a checkpoint's weights onto a backend, checking every name and shape.

use super::{Attention, Ffn, Indexer, Layer, Mlp, Model, Moe, QProj};
use crate::backend::Backend;
use crate::checkpoint::{Checkpoint, CheckpointError, HostTensor};
use crate::rope::RopeTables;

struct Loader<'a, B: Backend> {
    ckpt: &'a Checkpoint,
    backend: &'a B,
}

impl<B: Backend> Loader<'_, B> {
    fn host(&self, name: &str, shape: &[usize]) -> Result<HostTensor, CheckpointError> {
        self.ckpt.load(name, shape)
    }

    fn load(&self, name: &str, shape: &[usize]) -> Result<B::Buf, CheckpointError> {
        Ok(self.backend.upload(&self.host(name, shape)?.data))
    }

    fn mlp(
        &self,
        prefix: &str,
        hidden: usize,
        intermediate: usize,
    ) -> Result<Mlp<B>, CheckpointError> {
        Ok(Mlp {
            gate: self.load(
                &format!("{prefix}.gate_proj.weight"),
                &[intermediate, hidden],
            )?,
            up: self.load(&format!("{prefix}.up_proj.weight"), &[intermediate, hidden])?,
            down: self.load(
                &format!("{prefix}.down_proj.weight"),
                &[hidden, intermediate],
            )?,
            intermediate,
        })
    }
}

impl<B: Backend> Model<B> {
    /// Loads every weight of `ckpt` onto `backend`, checking names and shapes.
    pub fn load(ckpt: &Checkpoint, backend: B) -> Result<Self, CheckpointError> {
        let c = ckpt.config.clone();
        let l = Loader {
            ckpt,
            backend: &backend,
        };
        let (hidden, heads) = (c.hidden_size, c.num_heads);
        let (nope, rope, v, r) = (
            c.qk_nope_head_dim,
            c.qk_rope_head_dim,
            c.v_head_dim,
            c.kv_lora_rank,
        );
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            let q = match c.q_lora_rank {
                Some(rank) => QProj::LowRank {
                    a: l.load(&format!("{p}.self_attn.q_a_proj.weight"), &[rank, hidden])?,
                    norm: l.load(&format!("{p}.self_attn.q_a_layernorm.weight"), &[rank])?,
                    b: l.load(
                        &format!("{p}.self_attn.q_b_proj.weight"),
                        &[heads * (nope + rope), rank],
                    )?,
                    rank,
                },
                None => QProj::Full(l.load(
                    &format!("{p}.self_attn.q_proj.weight"),
                    &[heads * (nope + rope), hidden],
                )?),
            };
            let kv_b = l.host(
                &format!("{p}.self_attn.kv_b_proj.weight"),
                &[heads * (nope + v), r],
            )?;
            let mut w_uk = Vec::with_capacity(heads * nope * r);
            let mut w_uv = vec![0f32; heads * r * v];
            for h in 0..heads {
                let block = &kv_b.data[h * (nope + v) * r..][..(nope + v) * r];
                w_uk.extend_from_slice(&block[..nope * r]);
                for j in 0..v {
                    for k in 0..r {
                        w_uv[h * r * v + k * v + j] = block[(nope + j) * r + k];
                    }
                }
            }
            let indexer = match &c.indexer {
                None => None,
                Some(ix) => {
                    let rank = c.q_lora_rank.ok_or_else(|| {
                        CheckpointError::Missing(
                            "q_lora_rank (the indexer reads the query latent)".into(),
                        )
                    })?;
                    let ip = format!("{p}.self_attn.indexer");
                    Some(Indexer {
                        wq_b: l.load(
                            &format!("{ip}.wq_b.weight"),
                            &[ix.n_heads * ix.head_dim, rank],
                        )?,
                        wk: l.load(&format!("{ip}.wk.weight"), &[ix.head_dim, hidden])?,
                        k_norm_weight: l.load(&format!("{ip}.k_norm.weight"), &[ix.head_dim])?,
                        k_norm_bias: l.load(&format!("{ip}.k_norm.bias"), &[ix.head_dim])?,
                        weights_proj: l
                            .load(&format!("{ip}.weights_proj.weight"), &[ix.n_heads, hidden])?,
                    })
                }
            };
            let attn = Attention {
                q,
                kv_a: l.load(
                    &format!("{p}.self_attn.kv_a_proj_with_mqa.weight"),
                    &[r + rope, hidden],
                )?,
                kv_norm: l.load(&format!("{p}.self_attn.kv_a_layernorm.weight"), &[r])?,
                w_uk: backend.upload(&w_uk),
                w_uv: backend.upload(&w_uv),
                o: l.load(
                    &format!("{p}.self_attn.o_proj.weight"),
                    &[hidden, heads * v],
                )?,
                indexer,
            };
            let ffn = match (&c.moe, c.is_moe_layer(i)) {
                (Some(moe), true) => Ffn::Moe(Moe {
                    gate: l.load(
                        &format!("{p}.mlp.gate.weight"),
                        &[moe.n_routed_experts, hidden],
                    )?,
                    correction_bias: if ckpt
                        .contains(&format!("{p}.mlp.gate.e_score_correction_bias"))
                    {
                        l.host(
                            &format!("{p}.mlp.gate.e_score_correction_bias"),
                            &[moe.n_routed_experts],
                        )?
                        .data
                    } else {
                        vec![0.0; moe.n_routed_experts]
                    },
                    experts: (0..moe.n_routed_experts)
                        .map(|e| {
                            l.mlp(
                                &format!("{p}.mlp.experts.{e}"),
                                hidden,
                                moe.intermediate_size,
                            )
                        })
                        .collect::<Result<_, _>>()?,
                    shared: (moe.n_shared_experts > 0)
                        .then(|| {
                            l.mlp(
                                &format!("{p}.mlp.shared_experts"),
                                hidden,
                                moe.intermediate_size * moe.n_shared_experts,
                            )
                        })
                        .transpose()?,
                }),
                _ => Ffn::Dense(l.mlp(&format!("{p}.mlp"), hidden, c.intermediate_size)?),
            };
            layers.push(Layer {
                input_norm: l.load(&format!("{p}.input_layernorm.weight"), &[hidden])?,
                attn,
                post_norm: l.load(&format!("{p}.post_attention_layernorm.weight"), &[hidden])?,
                ffn,
            });
        }
        let embed = l.load("model.embed_tokens.weight", &[c.vocab_size, hidden])?;
        let lm_head = if c.tie_word_embeddings && !ckpt.contains("lm_head.weight") {
            l.load("model.embed_tokens.weight", &[c.vocab_size, hidden])?
        } else {
            l.load("lm_head.weight", &[c.vocab_size, hidden])?
        };
        let max_positions = c.max_position_embeddings;
        let tables = RopeTables::new(&c, max_positions);
        Ok(Self {
            norm: l.load("model.norm.weight", &[hidden])?,
            embed,
            lm_head,
            layers,
            rope_cos: backend.upload(&tables.cos),
            rope_sin: backend.upload(&tables.sin),
            max_positions,
            config: c,
            backend,
        })
    }
}
