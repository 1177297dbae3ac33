//! `dsgw engine ...`: create, inspect, run and measure models of the DeepSeek-V3.2 architecture.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use dsgw_engine::backend::Backend;
use dsgw_engine::backend::cpu::{Cpu, CpuBf16};
use dsgw_engine::chat::{self, Conversation, Message, Role, StreamParser};
use dsgw_engine::checkpoint::Checkpoint;
use dsgw_engine::generate::{Engine, EngineOptions, Event, GenerationRequest, SamplingParams};
use dsgw_engine::model::{Logits, Model};
use dsgw_engine::tokenizer::{EMBEDDED, Tokenizer};
use dsgw_engine::tooling::bench;
use dsgw_engine::tooling::tiny::{TinySpec, write_model};

#[derive(Clone, Copy, ValueEnum)]
pub enum Preset {
    /// Milliseconds per token; the V3.2 vocabulary, so the tokenizer works with it.
    Tiny,
    /// About 400 MB of weights, V3.2's attention shapes: for the benchmarks.
    Bench,
}

#[derive(Subcommand)]
pub enum EngineCommand {
    /// Write a small random model of the DeepSeek-V3.2 architecture in Hugging Face layout
    /// (config.json, model.safetensors, tokenizer.json), with every mechanism active.
    Init {
        /// Directory to write.
        #[arg(long, value_name = "DIR")]
        tiny: PathBuf,
        /// Seed of the random weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value = "tiny")]
        preset: Preset,
    },
    /// Print `{"logits": [[...], ...]}`: one row of vocabulary-size f32 logits per input position,
    /// from a single prefill. Needs only config.json and the safetensors files.
    Logits {
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        /// Comma-separated token ids, for example 0,17,33.
        #[arg(long, value_delimiter = ',', required = true)]
        tokens: Vec<u32>,
    },
    /// Generate a reply to one user message and stream it to stdout.
    Generate {
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        /// Thinking mode: the reasoning is printed first, on stderr.
        #[arg(long)]
        thinking: bool,
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Measure decode speed against memory bandwidth, sparse against dense attention at long
    /// contexts, prefill speed, and the prefix cache's effect on time to first token.
    Bench {
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        /// Context lengths for sparse-versus-dense decode.
        #[arg(long, value_delimiter = ',', default_value = "8192,32768,65536")]
        contexts: Vec<usize>,
        /// Decode steps timed per measurement.
        #[arg(long, default_value_t = 8)]
        decode_tokens: usize,
        /// Prompt length for prefill speed and the prefix-cache measurement.
        #[arg(long, default_value_t = 1024)]
        prefill: usize,
        /// How the weight matrices are held: f32, or bf16 (half the bytes per decode step).
        #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
        weights: String,
    },
    /// On a machine with an NVIDIA GPU: check every CUDA kernel and a whole model against the
    /// CPU backend, then time MLA decode, DSA, the indexer and GEMM (a few minutes). Prints a
    /// short table; writes every number to --out. Exits non-zero if any check disagrees.
    DeviceCheck {
        /// CUDA device ordinal.
        #[arg(long, default_value_t = 0)]
        device: usize,
        #[arg(long, default_value = "device-check.json")]
        out: PathBuf,
    },
}

fn load(dir: &Path) -> anyhow::Result<Model<Cpu>> {
    let ckpt = Checkpoint::open(dir)?;
    Ok(Model::load(&ckpt, Cpu)?)
}

fn tokenizer_for(dir: &Path) -> anyhow::Result<Tokenizer> {
    let own = dir.join("tokenizer.json");
    Ok(if own.exists() {
        Tokenizer::from_file(&own)?
    } else {
        Tokenizer::deepseek_v32()?
    })
}

pub fn run(command: EngineCommand) -> anyhow::Result<()> {
    match command {
        EngineCommand::Init { tiny, seed, preset } => {
            let spec = match preset {
                Preset::Tiny => TinySpec::tiny(129_280),
                Preset::Bench => TinySpec::bench(),
            };
            write_model(&tiny, &spec, seed)?;
            std::fs::write(tiny.join("tokenizer.json"), EMBEDDED)
                .context("writing tokenizer.json")?;
            eprintln!("wrote {}", tiny.display());
            Ok(())
        }
        EngineCommand::Logits { model, tokens } => {
            let model = load(&model)?;
            if let Some(bad) = tokens
                .iter()
                .find(|&&t| t as usize >= model.config.vocab_size)
            {
                bail!(
                    "token {bad} is outside the vocabulary of {}",
                    model.config.vocab_size
                );
            }
            let logits = model.forward(&tokens, &mut model.new_cache(), Logits::All);
            let rows: Vec<&[f32]> = logits.chunks_exact(model.config.vocab_size).collect();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            serde_json::to_writer(&mut out, &serde_json::json!({ "logits": rows }))?;
            writeln!(out)?;
            Ok(())
        }
        EngineCommand::Generate {
            model: dir,
            prompt,
            thinking,
            max_tokens,
            temperature,
            seed,
        } => {
            let model = load(&dir)?;
            let tokenizer = Arc::new(tokenizer_for(&dir)?);
            let text = chat::encode(&Conversation {
                messages: vec![Message::new(Role::User, prompt)],
                thinking,
                ..Conversation::default()
            })?;
            let ids = tokenizer.encode(&text)?;
            let engine = Engine::start(model, tokenizer, EngineOptions::default());
            let params = SamplingParams {
                temperature,
                top_p: 1.0,
                seed,
                max_tokens,
                ..SamplingParams::default()
            };
            let mut events = engine.submit(GenerationRequest {
                prompt: ids,
                params,
            })?;
            let mut parser = StreamParser::new(thinking);
            let started = Instant::now();
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            let mut print = |deltas: Vec<chat::Delta>| -> std::io::Result<()> {
                for d in deltas {
                    match d {
                        chat::Delta::Reasoning(r) => write!(err, "{r}")?,
                        chat::Delta::Content(c) => write!(out, "{c}")?,
                    }
                }
                out.flush()?;
                err.flush()
            };
            while let Some(event) = events.blocking_recv() {
                match event {
                    Event::Text(t) => print(parser.push(&t))?,
                    Event::Finished { reason, usage } => {
                        let (rest, calls) = parser.finish();
                        print(rest)?;
                        println!();
                        eprintln!(
                            "[{reason:?}: {} prompt tokens, {} generated in {:.2} s]",
                            usage.prompt_tokens,
                            usage.completion_tokens,
                            started.elapsed().as_secs_f64()
                        );
                        for c in calls {
                            eprintln!("[tool call {}({})]", c.name, c.arguments);
                        }
                    }
                }
            }
            Ok(())
        }
        EngineCommand::Bench {
            model,
            contexts,
            decode_tokens,
            prefill,
            weights,
        } => {
            let ckpt = Checkpoint::open(&model)?;
            if weights == "bf16" {
                benchmark(
                    Model::load(&ckpt, CpuBf16)?,
                    &model,
                    &contexts,
                    decode_tokens,
                    prefill,
                )
            } else {
                benchmark(
                    Model::load(&ckpt, Cpu)?,
                    &model,
                    &contexts,
                    decode_tokens,
                    prefill,
                )
            }
        }
        EngineCommand::DeviceCheck { device, out } => {
            let scratch =
                std::env::temp_dir().join(format!("dsgw-device-check-{}", std::process::id()));
            let report = dsgw_engine::tooling::device_check::run(device, &scratch);
            let _ = std::fs::remove_dir_all(&scratch);
            let report = report.map_err(|e| anyhow::anyhow!("device check: {e}"))?;
            std::fs::write(&out, serde_json::to_string_pretty(&report)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{}", report.table());
            println!("full numbers: {}", out.display());
            if !report.passed() {
                anyhow::bail!("the CUDA backend disagrees with the CPU backend (see above)");
            }
            Ok(())
        }
    }
}

fn benchmark<B: Backend>(
    mut model: Model<B>,
    dir: &Path,
    contexts: &[usize],
    decode_tokens: usize,
    prefill_len: usize,
) -> anyhow::Result<()> {
    let threads = rayon::current_num_threads();
    println!(
        "model: {}, {:?} weights, {} threads",
        dir.display(),
        model.backend().weight_format(),
        threads
    );

    let bandwidth = bench::copy_bandwidth(512 << 20);
    println!("\n## Decode against memory bandwidth\n");
    println!(
        "plain copy of 512 MiB: {:.2} GB/s (read + write)\n",
        bandwidth / 1e9
    );
    let short = bench::decode(&model, 64, decode_tokens, true);
    let rate = short.bytes_per_token as f64 / short.seconds_per_token;
    println!("| context | tokens/s | MB read per token | GB/s read | share of copy bandwidth |");
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {:.2} | {:.1} | {:.2} | {:.0}% |",
        short.context,
        1.0 / short.seconds_per_token,
        short.bytes_per_token as f64 / 1e6,
        rate / 1e9,
        100.0 * rate / bandwidth
    );

    println!("\n## DeepSeek Sparse Attention against dense attention (same weights)\n");
    let c = model.config.clone();
    let per_layer = |sparse: bool| {
        let index = if sparse {
            c.indexer.as_ref().map_or(0, |i| i.head_dim)
        } else {
            0
        };
        (c.kv_lora_rank + c.qk_rope_head_dim + index) * 4
    };
    println!(
        "KV cache per token: sparse {} B, dense {} B per layer (f32)\n",
        per_layer(true),
        per_layer(false)
    );
    println!(
        "| context | sparse ms/token | dense ms/token | speed-up | KV MiB sparse | KV MiB dense |"
    );
    println!("|---|---|---|---|---|---|");
    let indexer = model.config.indexer.clone();
    for &context in contexts {
        model.config.indexer = indexer.clone();
        let sparse = bench::decode(&model, context, decode_tokens, true);
        model.config.indexer = None;
        let dense = bench::decode(&model, context, decode_tokens, false);
        let mib = |bytes: usize| (bytes * context * c.num_layers) as f64 / (1 << 20) as f64;
        println!(
            "| {context} | {:.1} | {:.1} | {:.2}x | {:.0} | {:.0} |",
            sparse.seconds_per_token * 1e3,
            dense.seconds_per_token * 1e3,
            dense.seconds_per_token / sparse.seconds_per_token,
            mib(per_layer(true)),
            mib(per_layer(false)),
        );
    }
    model.config.indexer = indexer;

    println!("\n## Prefill and the prefix cache\n");
    let tokens_per_s = bench::prefill(&model, prefill_len);
    println!("prefill of {prefill_len} tokens: {tokens_per_s:.0} tokens/s\n");
    let tokenizer = Arc::new(Tokenizer::deepseek_v32()?);
    let vocab = model.config.vocab_size as u32;
    let engine = Engine::start(model, tokenizer, EngineOptions::default());
    let prompt: Vec<u32> = (0..prefill_len as u32)
        .map(|i| (i * 104_729 + 7) % vocab)
        .collect();
    println!("| request | time to first token | cached prompt tokens |");
    println!("|---|---|---|");
    for label in ["first", "repeated"] {
        let started = Instant::now();
        let params = SamplingParams {
            temperature: 0.0,
            max_tokens: 1,
            ..SamplingParams::default()
        };
        let mut events = engine.submit(GenerationRequest {
            prompt: prompt.clone(),
            params,
        })?;
        let mut cached = 0;
        while let Some(event) = events.blocking_recv() {
            if let Event::Finished { usage, .. } = event {
                cached = usage.cached_tokens;
            }
        }
        println!(
            "| {label} | {:.1} ms | {cached} |",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
