//! The pipeline's answer in DeepSeek's (OpenAI-compatible) shapes. A reply keeps the provider's
//! bytes; only `model` (as the client named it) and `usage` (DeepSeek's complete form, with
//! `dsgw_cost`) are re-encoded, and the usage is shown in a stream only when the client asked.

use crate::accounting::pricing::Priced;
use crate::pipeline::respond::{Event, Whole};
use crate::providers::reply::Reply;
use crate::wire::raw_object::Edit;

/// The usage object with its cost, as JSON text.
fn usage_json(reply: &Reply, priced: Option<&Priced>) -> Option<String> {
    let usage = reply.usage()?;
    Some(match priced {
        Some(priced) => usage.wire_with_cost(&priced.json_text()),
        None => usage.wire.clone(),
    })
}

/// A whole completion's body.
pub fn whole(whole: &Whole) -> Vec<u8> {
    let model = Edit::Set("model", whole.model.name_json.as_str().into());
    match usage_json(&whole.reply, whole.priced.as_ref()) {
        Some(usage) => whole
            .reply
            .render(&[model, Edit::Set("usage", usage.into())]),
        None => whole.reply.render(&[model]),
    }
}

/// One chunk's text appended to `out`; nothing for a usage-only chunk the client did not ask to
/// see. The gateway always asks providers for usage; without `include_usage` the client sees
/// none.
pub fn chunk_into(
    reply: &Reply,
    priced: Option<&Priced>,
    model_json: &str,
    include_usage: bool,
    out: &mut Vec<u8>,
) {
    let model = Edit::Set("model", model_json.into());
    if include_usage {
        match usage_json(reply, priced) {
            Some(usage) => reply.render_into(&[model, Edit::Set("usage", usage.into())], out),
            None => reply.render_into(&[model], out),
        }
    } else if reply.usage().is_none() || reply.has_choices() {
        reply.render_into(&[model, Edit::Remove("usage")], out);
    }
}

/// One stream event as an SSE frame appended to `out`: a chunk, `[DONE]` after a clean end, and
/// an error event in DeepSeek's envelope (never a silent end) when the stream broke.
pub fn event(event: &Event, model_json: &str, include_usage: bool, out: &mut Vec<u8>) {
    match event {
        Event::Chunk { reply, priced } => {
            // Room for the whole frame at once: grown by each part in turn, a frame took three
            // allocations ("data: ", the chunk, the blank line).
            out.reserve(b"data: \n\n".len() + reply.text_len() + model_json.len() + FRAME_SLACK);
            let start = out.len();
            out.extend_from_slice(b"data: ");
            let data = out.len();
            chunk_into(reply, priced.as_ref(), model_json, include_usage, out);
            if out.len() == data {
                out.truncate(start);
            } else {
                out.extend_from_slice(b"\n\n");
            }
        }
        Event::Done => frame(out, b"[DONE]"),
        Event::Failed(error) => frame(out, error.envelope_json().as_bytes()),
    }
}

/// What a chunk's edits add besides the model name, most of the time (a usage chunk's cost
/// object grows it past this, once a stream).
const FRAME_SLACK: usize = 128;

fn frame(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

/// One chunk's text, or `None` for a usage-only chunk the client did not ask to see.
#[cfg(test)]
fn chunk(
    reply: &Reply,
    priced: Option<&Priced>,
    model_json: &str,
    include_usage: bool,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    chunk_into(reply, priced, model_json, include_usage, &mut out);
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::pricing::PriceBook;
    use crate::providers::remote::dialect::{Inner, normalize};
    use serde_json::{Value, json};

    fn reply(text: &str, inner: Inner) -> Reply {
        normalize(
            crate::wire::raw_object::RawObject::parse(text).unwrap(),
            inner,
        )
    }

    fn value(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn a_completion_gets_the_clients_model_and_its_cost() {
        let r = reply(
            r#"{"model":"deepseek/deepseek-v3.2","choices":[{"index":0,"message":{"role":"assistant","content":"hi","reasoning":"think"}}],
               "usage":{"prompt_tokens":100,"completion_tokens":10,"prompt_tokens_details":{"cached_tokens":64}},"extra":[1,  2]}"#,
            Inner::Message,
        );
        let book = PriceBook::new([]);
        let priced = book.get("deepseek-v3.2").unwrap().charge(
            &r.usage().unwrap().usage,
            jiff::Timestamp::now(),
            None,
        );
        let priced = priced.priced();
        let model = std::sync::Arc::new(crate::pipeline::routing::catalog::ModelSpec::for_tests(
            "deepseek-reasoner",
            crate::pipeline::routing::catalog::ModelMode::Thinking,
            true,
        ));
        let body = whole(&Whole {
            reply: r,
            model,
            priced: Some(priced),
        });
        let v = value(&body);
        assert_eq!(v["model"], "deepseek-reasoner");
        assert_eq!(v["choices"][0]["message"]["reasoning_content"], "think");
        assert_eq!(v["usage"]["prompt_cache_hit_tokens"], 64);
        assert_eq!(v["usage"]["prompt_cache_miss_tokens"], 36);
        // 64 * 0.028 + 36 * 0.28 + 10 * 0.42 per 1M tokens.
        assert_eq!(v["usage"]["dsgw_cost"]["total"], "0.000016072");
        assert!(
            String::from_utf8(body)
                .unwrap()
                .contains(r#""extra":[1,  2]"#)
        );
    }

    #[test]
    fn usage_chunk_is_dropped_unless_asked() {
        let usage_chunk = reply(
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
            Inner::Delta,
        );
        assert!(chunk(&usage_chunk, None, r#""m""#, false).is_none());
        let shown = value(&chunk(&usage_chunk, None, r#""m""#, true).unwrap());
        assert_eq!(shown["usage"]["prompt_cache_miss_tokens"], 5);

        let content = reply(
            r#"{"choices":[{"delta":{"reasoning":"r"}}],"usage":null}"#,
            Inner::Delta,
        );
        let v = value(&chunk(&content, None, r#""m""#, false).unwrap());
        assert!(v.get("usage").is_none());
        assert_eq!(v["choices"][0]["delta"]["reasoning_content"], "r");
        assert_eq!(v["model"], "m");
        let v = value(&chunk(&content, None, r#""m""#, true).unwrap());
        assert!(v["usage"].is_null());
        assert_eq!(
            v,
            json!({"choices":[{"delta":{"reasoning_content":"r"}}],"usage":null,"model":"m"})
        );
    }
}
