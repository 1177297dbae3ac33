//! What providers emit: a whole completion or a stream of events, each answer object in DeepSeek's
//! shape whatever the provider (remote dialects are normalised on arrival, the local engine
//! renders its own). Providers report; they never settle, price or touch health: the pipeline
//! does that, once, from these events.

use std::pin::Pin;

use futures_util::Stream;
use serde::Deserialize;

use crate::accounting::usage::Usage;
use crate::wire::error::ApiError;
use crate::wire::raw_object::{Edit, Raw, RawObject};

/// A completion, or one chunk of a streamed one (`choices[].message` or `choices[].delta`).
/// Fields keep the provider's bytes; only `choices` may have been re-encoded, when reasoning had
/// to be renamed or placeholders re-identified.
#[derive(Debug)]
pub struct Reply {
    raw: RawObject,
    /// `choices` as re-encoded, replacing the provider's.
    choices: Option<String>,
    usage: Option<ReplyUsage>,
}

/// The usage an object carried, read into the one record and completed to DeepSeek's form.
#[derive(Debug, Clone)]
pub struct ReplyUsage {
    pub usage: Usage,
    /// The provider's own cost figure (OpenRouter's `usage.cost`), picodollars.
    pub provider_cost: Option<u64>,
    /// The usage object's JSON text with both cache forms and totals (the provider's other
    /// fields kept).
    pub wire: String,
}

/// One step of a stream.
#[derive(Debug)]
pub enum Event {
    Reply(Reply),
    /// The provider ended the stream cleanly (`[DONE]`).
    Done,
    /// The stream broke: cut, stalled, garbled, or the provider sent an error event.
    Failed(ApiError),
}

pub type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// What a call produced before anything reached the client.
pub enum Started {
    /// A whole completion (non-streaming requests).
    Whole(Reply),
    /// A stream, not yet read.
    Stream(Events),
}

impl ReplyUsage {
    /// The wire form with dsgw's cost (a JSON object's text) appended as `dsgw_cost`.
    pub fn wire_with_cost(&self, cost: &str) -> String {
        let mut out = String::with_capacity(self.wire.len() + cost.len() + 14);
        match self.wire.strip_suffix('}') {
            // `{}` has no field to follow.
            Some(open) if open.trim_end() != "{" => {
                out.push_str(open);
                out.push(',');
            }
            _ => out.push('{'),
        }
        out.push_str("\"dsgw_cost\":");
        out.push_str(cost);
        out.push('}');
        out
    }
}

impl Reply {
    pub fn new(raw: RawObject, choices: Option<String>, usage: Option<ReplyUsage>) -> Self {
        Self {
            raw,
            choices,
            usage,
        }
    }

    /// A top-level field as the provider sent it (`id`, `created`, ...).
    pub fn get(&self, key: &str) -> Option<Raw<'_>> {
        self.raw.get(key)
    }

    pub fn usage(&self) -> Option<&ReplyUsage> {
        self.usage.as_ref()
    }

    /// The `choices` array's JSON text (absent: `None`).
    pub fn choices_json(&self) -> Option<&str> {
        self.choices
            .as_deref()
            .or_else(|| self.raw.get("choices").map(Raw::get))
    }

    /// Replaces `choices` (re-identified text, renamed fields).
    pub fn set_choices(&mut self, json: String) {
        self.choices = Some(json);
    }

    /// Whether `choices` holds at least one choice (a usage-only chunk holds none).
    pub fn has_choices(&self) -> bool {
        // The text is JSON already checked: an array is non-empty when something follows `[`
        // (every chunk asks this; parsing the array to count it cost ~1 K instructions).
        self.choices_json().is_some_and(|c| {
            c.trim_start()
                .strip_prefix('[')
                .is_some_and(|inner| !inner.trim_start().starts_with(']'))
        })
    }

    /// Whether a choice finished with `insufficient_system_resource`: DeepSeek's way of saying it
    /// ran out of capacity mid-generation.
    pub fn out_of_capacity(&self) -> bool {
        #[derive(Deserialize)]
        struct Finish<'a> {
            #[serde(borrow, default)]
            finish_reason: Option<&'a str>,
        }
        self.choices_json().is_some_and(|c| {
            // Cheap test first: almost every object lacks the word.
            OUT_OF_CAPACITY.find(c.as_bytes()).is_some()
                && serde_json::from_str::<Vec<Finish>>(c).is_ok_and(|choices| {
                    choices
                        .iter()
                        .any(|c| c.finish_reason == Some("insufficient_system_resource"))
                })
        })
    }

    /// The object's text with `edits` (and the re-encoded `choices`) applied.
    pub fn render(&self, edits: &[Edit]) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_into(edits, &mut out);
        out
    }

    /// About how long the reply is as sent: what rendering it takes, before its edits.
    pub fn text_len(&self) -> usize {
        self.raw.text().len() + self.choices.as_ref().map_or(0, String::len)
    }

    /// [`Reply::render`], appended to `out`.
    pub fn render_into(&self, edits: &[Edit], out: &mut Vec<u8>) {
        match &self.choices {
            None => self.raw.render_into(edits, out),
            Some(choices) => {
                let mut all = edits.to_vec();
                all.push(Edit::Set("choices", choices.as_str().into()));
                self.raw.render_into(&all, out);
            }
        }
    }

    /// The first choice, typed (surfaces that translate the answer read it this way).
    pub fn first_choice(&self) -> Choice {
        self.choices_json()
            .and_then(|c| serde_json::from_str::<Vec<Choice>>(c).ok())
            .and_then(|c| c.into_iter().next())
            .unwrap_or_default()
    }
}

/// DeepSeek's capacity finish reason, searched for in every answer and chunk (a searcher built
/// once: building one per search cost more than the search).
static OUT_OF_CAPACITY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new("insufficient_system_resource"));

/// One choice of a reply, as far as a translating surface reads it.
#[derive(Debug, Default, Deserialize)]
pub struct Choice {
    /// A whole completion's message.
    #[serde(default)]
    pub message: Option<Message>,
    /// A chunk's delta.
    #[serde(default)]
    pub delta: Option<Message>,
    /// A text completion's text (FIM).
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

impl Choice {
    /// The message or delta, whichever this choice carries.
    pub fn body(&self) -> Option<&Message> {
        self.message.as_ref().or(self.delta.as_ref())
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
}

/// A tool call, or (in a stream) a fragment of one.
#[derive(Debug, Default, Deserialize)]
pub struct ToolCall {
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: FunctionCall,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionCall {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str) -> Reply {
        Reply::new(RawObject::parse(text).unwrap(), None, None)
    }

    #[test]
    fn reads_choices_typed_and_finds_capacity_stops() {
        let r = reply(
            r#"{"id":"x","choices":[{"index":0,"delta":{"content":"a","tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{"}}]},"finish_reason":"insufficient_system_resource"}]}"#,
        );
        assert!(r.out_of_capacity());
        assert!(r.has_choices());
        let c = r.first_choice();
        let d = c.body().unwrap();
        assert_eq!(d.content.as_deref(), Some("a"));
        assert_eq!(d.tool_calls[0].function.name.as_deref(), Some("f"));
        assert!(!reply(r#"{"choices":[]}"#).has_choices());
        assert!(!reply(r#"{"choices":[ ]}"#).has_choices());
        assert!(!reply(r#"{"choices":null}"#).has_choices());
        assert!(!reply(r#"{"choices":{"a":1}}"#).has_choices());
        assert!(reply(r#"{"choices":[ {}]}"#).has_choices());
        assert!(!reply(r#"{"choices":[{"finish_reason":"stop"}]}"#).out_of_capacity());
    }

    #[test]
    fn re_encoded_choices_replace_the_providers() {
        let mut r = reply(r#"{"id":"x","choices":[{"text":"a"}],"z":1}"#);
        r.set_choices(r#"[{"text":"b"}]"#.to_owned());
        assert_eq!(r.first_choice().text.as_deref(), Some("b"));
        assert_eq!(
            String::from_utf8(r.render(&[Edit::Set("model", "\"m\"".into())])).unwrap(),
            r#"{"id":"x","choices":[{"text":"b"}],"z":1,"model":"m"}"#
        );
    }
}
