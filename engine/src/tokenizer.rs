//! DeepSeek-V3.2's byte-level BPE tokenizer (vendored `tokenizer.json`, loaded with the
//! `tokenizers` crate), and incremental detokenisation for streaming.

use std::path::Path;

/// The V3.2 `tokenizer.json`, embedded so the built-in model works offline.
pub const EMBEDDED: &[u8] = include_bytes!("../tokenizer/deepseek-v3.2/tokenizer.json");

/// Each id's raw bytes; `None` for special tokens.
pub type TokenBytes = Vec<Option<Box<[u8]>>>;

#[derive(Debug, thiserror::Error)]
#[error("tokenizer: {0}")]
pub struct TokenizerError(String);

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: u32,
    eos: u32,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.vocab_size())
            .finish()
    }
}

impl Tokenizer {
    /// The V3.2 tokenizer shipped inside the binary.
    pub fn deepseek_v32() -> Result<Self, TokenizerError> {
        Self::from_inner(
            tokenizers::Tokenizer::from_bytes(EMBEDDED)
                .map_err(|e| TokenizerError(e.to_string()))?,
        )
    }

    /// A `tokenizer.json` from disk (a checkpoint directory's own).
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        Self::from_inner(
            tokenizers::Tokenizer::from_file(path)
                .map_err(|e| TokenizerError(format!("{}: {e}", path.display())))?,
        )
    }

    fn from_inner(inner: tokenizers::Tokenizer) -> Result<Self, TokenizerError> {
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| TokenizerError(format!("no token {t}")))
        };
        Ok(Self {
            bos: id(crate::chat::BOS)?,
            eos: id(crate::chat::EOS)?,
            inner,
        })
    }

    pub fn bos(&self) -> u32 {
        self.bos
    }

    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// Ids including the added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes text; special tokens written in the text (`<｜User｜>`, `<think>`) become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The id of a token written out (`</think>`), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Every id's raw bytes (byte-level BPE undone), `None` for special tokens: what a grammar
    /// constraint checks candidate tokens against.
    pub fn token_bytes(&self) -> TokenBytes {
        // GPT-2's byte-to-character table, inverted: printable Latin-1 bytes stand for
        // themselves, the rest were shifted to 256 and up in order.
        let mut byte_of = std::collections::HashMap::new();
        let mut shifted = 0u32;
        for b in 0u32..=255 {
            let printable =
                (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            let c = if printable {
                b
            } else {
                shifted += 1;
                255 + shifted
            };
            byte_of.insert(char::from_u32(c).expect("a valid char"), b as u8);
        }
        let special = self.inner.get_added_tokens_decoder();
        (0..self.vocab_size() as u32)
            .map(|id| {
                if special.get(&id).is_some_and(|t| t.special) {
                    return None;
                }
                let token = self.inner.id_to_token(id)?;
                token
                    .chars()
                    .map(|c| byte_of.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .map(Vec::into_boxed_slice)
            })
            .collect()
    }

    /// Decodes ids, keeping special tokens as text (the chat parser needs `</think>`).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError(e.to_string()))
    }
}

/// Turns a growing list of ids into text pieces without ever splitting a UTF-8 character that
/// byte-level BPE spreads over several tokens.
#[derive(Debug, Default)]
pub struct Detokenizer {
    ids: Vec<u32>,
    /// Text already emitted, as a prefix of `decode(ids)`.
    emitted: usize,
}

impl Detokenizer {
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, TokenizerError> {
        self.ids.push(id);
        let text = tokenizer.decode(&self.ids)?;
        if text.ends_with('\u{fffd}') || text.len() < self.emitted {
            return Ok(String::new());
        }
        let piece = text[self.emitted..].to_owned();
        self.emitted = text.len();
        Ok(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_tokens_have_their_documented_ids() {
        let t = Tokenizer::deepseek_v32().unwrap();
        assert_eq!(t.bos(), 0);
        assert_eq!(t.eos(), 1);
        assert_eq!(t.encode("<｜User｜>").unwrap(), vec![128803]);
        assert_eq!(t.encode("<｜Assistant｜>").unwrap(), vec![128804]);
        assert_eq!(t.encode("<think>").unwrap(), vec![128798]);
        assert_eq!(t.encode("</think>").unwrap(), vec![128799]);
        assert!(t.vocab_size() >= 128815);
    }

    #[test]
    fn round_trips_text_and_streams_whole_characters() {
        let t = Tokenizer::deepseek_v32().unwrap();
        let text =
            "<｜begin▁of▁sentence｜><｜User｜>你好, DeepSeek! 3.14159 🚀<｜Assistant｜></think>";
        let ids = t.encode(text).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), text);
        let mut d = Detokenizer::default();
        let mut streamed = String::new();
        for id in ids {
            let piece = d.push(&t, id).unwrap();
            assert!(!piece.contains('\u{fffd}'));
            streamed.push_str(&piece);
        }
        assert_eq!(streamed, text);
    }
}
