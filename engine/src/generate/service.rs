//! The scheduler: one thread owns the model and every sequence's cache. Each step it admits new
//! requests (prefill, with prefix-cache reuse), then decodes one token for every running sequence
//! in a single batched forward pass. Clients receive events through channels; a client that goes
//! away cancels its sequence at the next step.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::json_constraint::JsonState;
use super::prefix_cache::PrefixCache;
use super::sampling::{Constraint, Sampler, SamplingParams};
use crate::backend::Backend;
use crate::cache::KvCache;
use crate::chat::partial_marker_len;
use crate::model::{Logits, Model, Segment};
use crate::tokenizer::TokenBytes;
use crate::tokenizer::{Detokenizer, Tokenizer};

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End of sentence or a stop string.
    Stop,
    /// `max_tokens` or the context window.
    Length,
}

/// Token counts of one request, as DeepSeek reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationUsage {
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache (whole 64-token blocks).
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The next piece of text (never a partial UTF-8 character or a partial stop string).
    Text(String),
    Finished {
        reason: FinishReason,
        usage: GenerationUsage,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error(
        "This model's maximum context length is {limit} tokens. However, you requested {total} tokens ({prompt} in the messages, {completion} in the completion). Please reduce the length of the messages or completion."
    )]
    TooLong {
        limit: usize,
        total: usize,
        prompt: usize,
        completion: usize,
    },
    #[error("the engine has stopped")]
    Stopped,
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Most sequences decoded together.
    pub max_batch: usize,
    /// Prompt snapshots kept for prefix reuse.
    pub prefix_cache_entries: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_batch: 16,
            prefix_cache_entries: 32,
        }
    }
}

struct Job {
    request: GenerationRequest,
    events: UnboundedSender<Event>,
}

enum Message {
    Job(Job),
    Stop,
}

/// A handle to the engine thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    jobs: Sender<Message>,
    max_context: usize,
}

impl Engine {
    pub fn start<B: Backend>(
        model: Model<B>,
        tokenizer: Arc<Tokenizer>,
        options: EngineOptions,
    ) -> Self {
        let (jobs, queue) = mpsc::channel();
        let max_context = model.config.max_position_embeddings;
        std::thread::Builder::new()
            .name("dsgw-engine".into())
            .spawn(move || Scheduler::new(model, tokenizer, options).run(queue))
            .expect("spawn the engine thread");
        Self { jobs, max_context }
    }

    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// Queues a request; its events arrive on the returned channel. Dropping the receiver cancels.
    pub fn submit(
        &self,
        request: GenerationRequest,
    ) -> Result<UnboundedReceiver<Event>, EngineError> {
        if request.prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let total = request.prompt.len() + request.params.max_tokens;
        if total > self.max_context {
            return Err(EngineError::TooLong {
                limit: self.max_context,
                total,
                prompt: request.prompt.len(),
                completion: request.params.max_tokens,
            });
        }
        let (events, receiver) = unbounded_channel();
        self.jobs
            .send(Message::Job(Job { request, events }))
            .map_err(|_| EngineError::Stopped)?;
        Ok(receiver)
    }

    /// Ends the engine thread at its next step. Running and queued sequences end as if it had
    /// crashed: their event channels close without a `Finished` event. Later submissions fail
    /// with [`EngineError::Stopped`].
    pub fn stop(&self) {
        let _ = self.jobs.send(Message::Stop);
    }
}

struct Sequence<B: Backend> {
    cache: KvCache<B>,
    events: UnboundedSender<Event>,
    sampler: Sampler,
    params: SamplingParams,
    detokenizer: Detokenizer,
    /// Decoded text not yet sent (held back while it may be the start of a stop string).
    held: String,
    usage: GenerationUsage,
    next: u32,
    /// The JSON grammar, when the output must be a JSON object.
    json: Option<JsonGuard>,
}

/// A JSON-mode sequence's grammar state; inactive while the model is still reasoning.
struct JsonGuard {
    state: JsonState,
    active: bool,
}

struct Scheduler<B: Backend> {
    model: Model<B>,
    tokenizer: Arc<Tokenizer>,
    options: EngineOptions,
    prefix: PrefixCache<B>,
    stop_ids: Vec<u32>,
    running: Vec<Sequence<B>>,
    /// Token bytes for grammar constraints, built on the first constrained request.
    token_bytes: Option<Arc<TokenBytes>>,
    think_end: Option<u32>,
}

enum Step {
    Continue,
    Finished(FinishReason),
}

impl<B: Backend> Scheduler<B> {
    fn new(model: Model<B>, tokenizer: Arc<Tokenizer>, options: EngineOptions) -> Self {
        let mut stop_ids = model.config.eos_token_ids.clone();
        stop_ids.push(tokenizer.eos());
        let think_end = tokenizer.token_id(crate::chat::THINK_END);
        let mut scheduler = Self {
            prefix: PrefixCache::new(options.prefix_cache_entries),
            model,
            tokenizer,
            options,
            stop_ids,
            running: Vec::new(),
            token_bytes: None,
            think_end: None,
        };
        scheduler.think_end = think_end;
        scheduler
    }

    fn run(mut self, queue: Receiver<Message>) {
        loop {
            if self.running.is_empty() {
                match queue.recv() {
                    Ok(Message::Job(job)) => self.admit(job),
                    Ok(Message::Stop) | Err(_) => return,
                }
            }
            while self.running.len() < self.options.max_batch {
                match queue.try_recv() {
                    Ok(Message::Job(job)) => self.admit(job),
                    Ok(Message::Stop) => return,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if self.running.is_empty() => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            self.running.retain(|s| !s.events.is_closed());
            if !self.running.is_empty() {
                self.decode_step();
            }
        }
    }

    /// Prefill: reuse the longest cached prefix, compute the rest, sample the first token.
    fn admit(&mut self, job: Job) {
        let prompt = &job.request.prompt;
        let mut cache = self
            .prefix
            .lookup(prompt)
            .unwrap_or_else(|| self.model.new_cache());
        let cached = cache.len();
        let logits = self
            .model
            .forward(&prompt[cached..], &mut cache, Logits::Last);
        self.prefix.insert(prompt, &cache);
        let json = match job.request.params.constraint {
            Constraint::None => None,
            constraint => {
                if self.token_bytes.is_none() {
                    self.token_bytes = Some(Arc::new(self.tokenizer.token_bytes()));
                }
                Some(JsonGuard {
                    state: JsonState::default(),
                    active: constraint == Constraint::JsonObject,
                })
            }
        };
        let sampler = Sampler::new(&job.request.params);
        let mut seq = Sequence {
            cache,
            events: job.events,
            sampler,
            params: job.request.params,
            detokenizer: Detokenizer::default(),
            held: String::new(),
            usage: GenerationUsage {
                prompt_tokens: prompt.len(),
                cached_tokens: cached,
                completion_tokens: 0,
            },
            next: 0,
            json,
        };
        seq.next = self.choose(&mut seq, &logits);
        match self.accept(&mut seq) {
            Step::Continue => self.running.push(seq),
            Step::Finished(reason) => finish(&mut seq, reason),
        }
    }

    /// One token for every running sequence, in one batched forward pass.
    fn decode_step(&mut self) {
        let tokens: Vec<[u32; 1]> = self.running.iter().map(|s| [s.next]).collect();
        let mut segments: Vec<Segment<'_, B>> = self
            .running
            .iter_mut()
            .zip(&tokens)
            .map(|(s, t)| Segment {
                cache: &mut s.cache,
                tokens: t,
            })
            .collect();
        let logits = self.model.forward_batch(&mut segments, Logits::Last);
        let vocab = self.model.config.vocab_size;
        let mut finished = Vec::new();
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            let mut seq = self.running.swap_remove(i);
            seq.next = self.choose(&mut seq, row);
            self.running.push(seq);
            let last = self.running.len() - 1;
            self.running.swap(i, last);
            if let Step::Finished(reason) = self.accept_at(i) {
                finished.push((i, reason));
            }
        }
        for (i, reason) in finished.into_iter().rev() {
            let mut seq = self.running.swap_remove(i);
            finish(&mut seq, reason);
        }
    }

    /// The next token: sampled, or, in JSON mode, sampled among the tokens that keep the
    /// output valid JSON (only the shortest closing once the budget runs low; the end of
    /// sentence once the object is closed).
    fn choose(&self, seq: &mut Sequence<B>, logits: &[f32]) -> u32 {
        let eos = self.tokenizer.eos();
        let (Some(guard), Some(table)) = (&seq.json, &self.token_bytes) else {
            return seq.sampler.sample(logits);
        };
        if !guard.active {
            return seq.sampler.sample(logits);
        }
        if guard.state.is_complete() {
            return eos;
        }
        let remaining = seq
            .params
            .max_tokens
            .saturating_sub(seq.usage.completion_tokens);
        let closing = guard.state.closing();
        let tight = remaining <= closing.len() + 1;
        let state = &guard.state;
        let accept = |id: u32| match table.get(id as usize).and_then(Option::as_ref) {
            Some(bytes) if tight => !bytes.is_empty() && closing.starts_with(bytes),
            Some(bytes) => state.accepts(bytes),
            None => false,
        };
        seq.sampler
            .sample_constrained(logits, &accept)
            .unwrap_or(eos)
    }

    fn limits(&self) -> Limits<'_> {
        Limits {
            tokenizer: &self.tokenizer,
            stop_ids: &self.stop_ids,
            max_positions: self.model.config.max_position_embeddings,
            token_bytes: self.token_bytes.as_deref().map(Vec::as_slice),
            think_end: self.think_end,
        }
    }

    fn accept_at(&mut self, i: usize) -> Step {
        let mut seq = self.running.swap_remove(i);
        let step = self.limits().accept(&mut seq);
        self.running.push(seq);
        let last = self.running.len() - 1;
        self.running.swap(i, last);
        step
    }

    fn accept(&self, seq: &mut Sequence<B>) -> Step {
        self.limits().accept(seq)
    }
}

/// What decides, token by token, whether a sequence goes on.
struct Limits<'a> {
    tokenizer: &'a Tokenizer,
    stop_ids: &'a [u32],
    max_positions: usize,
    token_bytes: Option<&'a [Option<Box<[u8]>>]>,
    think_end: Option<u32>,
}

impl Limits<'_> {
    /// Takes the sampled `seq.next`: ends the sequence or emits its text.
    fn accept<B: Backend>(&self, seq: &mut Sequence<B>) -> Step {
        if self.stop_ids.contains(&seq.next) {
            return Step::Finished(FinishReason::Stop);
        }
        seq.usage.completion_tokens += 1;
        if let Ok(piece) = seq.detokenizer.push(self.tokenizer, seq.next) {
            seq.held.push_str(&piece);
        }
        let mut json_done = false;
        if let Some(guard) = seq.json.as_mut() {
            if guard.active {
                let bytes = self
                    .token_bytes
                    .and_then(|t| t.get(seq.next as usize))
                    .and_then(Option::as_ref);
                if let Some(bytes) = bytes {
                    guard.state.push(bytes);
                }
                json_done = guard.state.is_complete();
            } else if Some(seq.next) == self.think_end {
                guard.active = true;
            }
        }
        if let Some(at) = seq
            .params
            .stop
            .iter()
            .filter_map(|s| seq.held.find(s.as_str()))
            .min()
        {
            seq.held.truncate(at);
            return Step::Finished(FinishReason::Stop);
        }
        let keep = seq
            .params
            .stop
            .iter()
            .map(|s| partial_marker_len(&seq.held, s))
            .max()
            .unwrap_or(0);
        if seq.held.len() > keep {
            let ready: String = seq.held.drain(..seq.held.len() - keep).collect();
            let _ = seq.events.send(Event::Text(ready));
        }
        if json_done {
            // The object is closed: nothing may follow it.
            return Step::Finished(FinishReason::Stop);
        }
        let at_limit = seq.usage.completion_tokens >= seq.params.max_tokens
            || seq.cache.len() + 1 >= self.max_positions;
        if at_limit {
            Step::Finished(FinishReason::Length)
        } else {
            Step::Continue
        }
    }
}

fn finish<B: Backend>(seq: &mut Sequence<B>, reason: FinishReason) {
    if !seq.held.is_empty() {
        let _ = seq.events.send(Event::Text(std::mem::take(&mut seq.held)));
    }
    let _ = seq.events.send(Event::Finished {
        reason,
        usage: seq.usage,
    });
}
