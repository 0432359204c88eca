//! Chat templates: which family a GGUF speaks, and rendering a system + user turn to token ids.
//!
//! Template text lives in `prompts/`. Special tokens written in a template become single token ids;
//! message text is tokenized as plain text (never parsed for special tokens), so a document that
//! contains `<|im_start|>` or `[INST]` cannot forge a turn.
use crate::gguf::GgufFile;
use crate::tokenizer::{Tokenizer, TokenizerFamily};

/// The chat formats rag renders.
///
/// ```
/// use rag_model::TemplateFamily;
/// assert_eq!("chatml".parse(), Ok(TemplateFamily::ChatMl));
/// assert_eq!(TemplateFamily::Llama2.name(), "llama2");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateFamily {
    /// Llama 2-Chat: `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]`.
    Llama2,
    /// ChatML: `<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n...`.
    ChatMl,
}

impl TemplateFamily {
    /// The name used on the command line and in `rag model info`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama2 => "llama2",
            Self::ChatMl => "chatml",
        }
    }

    /// Pick the family from `tokenizer.chat_template` when present, else from the vocabulary.
    pub fn detect(gguf: &GgufFile, tokenizer: &Tokenizer) -> Self {
        if let Some(t) = gguf.get_str("tokenizer.chat_template") {
            if t.contains("<|im_start|>") {
                return Self::ChatMl;
            }
            if t.contains("[INST]") {
                return Self::Llama2;
            }
        }
        if tokenizer.token_id("<|im_start|>").is_some() {
            Self::ChatMl
        } else {
            // SentencePiece Llama vocabularies without a template are Llama 2-Chat style.
            match tokenizer.family() {
                TokenizerFamily::LlamaSpm => Self::Llama2,
                TokenizerFamily::Gpt2Bpe => Self::ChatMl,
            }
        }
    }
}

impl std::str::FromStr for TemplateFamily {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "llama2" | "llama-2" | "inst" => Ok(Self::Llama2),
            "chatml" => Ok(Self::ChatMl),
            _ => Err(format!("unknown chat template '{s}' (llama2, chatml)")),
        }
    }
}

impl std::fmt::Display for TemplateFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A chat template bound to its family's special tokens.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    family: TemplateFamily,
    text: &'static str,
    specials: &'static [&'static str],
    end_of_turn: &'static str,
}

impl ChatTemplate {
    /// The template of a family, from `prompts/`.
    pub fn new(family: TemplateFamily) -> Self {
        match family {
            TemplateFamily::Llama2 => Self {
                family,
                text: include_str!("../../prompts/llama2.txt"),
                specials: &["<s>", "</s>"],
                end_of_turn: "</s>",
            },
            TemplateFamily::ChatMl => Self {
                family,
                text: include_str!("../../prompts/chatml.txt"),
                specials: &["<|im_start|>", "<|im_end|>"],
                end_of_turn: "<|im_end|>",
            },
        }
    }

    /// The family.
    pub fn family(&self) -> TemplateFamily {
        self.family
    }

    /// The token that ends the assistant's turn (`<|im_end|>`, or `</s>` for Llama 2).
    pub fn end_of_turn(&self) -> &'static str {
        self.end_of_turn
    }

    /// Render one system + user turn, ready for the assistant's answer. An empty `system`
    /// drops the template's system block.
    pub fn render(&self, system: &str, user: &str) -> Prompt {
        let mut segments = Vec::new();
        let mut rest = self.text;
        let mut skipping = false;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                if !skipping {
                    push_literal(&mut segments, rest);
                }
                break;
            };
            let close = rest[open..].find('}').map(|c| open + c);
            let Some(close) = close else {
                if !skipping {
                    push_literal(&mut segments, rest);
                }
                break;
            };
            if !skipping {
                push_literal(&mut segments, &rest[..open]);
            }
            match &rest[open + 1..close] {
                "?system" => skipping = system.is_empty(),
                "/system" => skipping = false,
                "system" if !skipping => segments.push(Segment::Message(system.to_string())),
                "user" if !skipping => segments.push(Segment::Message(user.to_string())),
                "system" | "user" => {}
                other => {
                    if !skipping {
                        push_literal(&mut segments, &format!("{{{other}}}"));
                    }
                }
            }
            rest = &rest[close + 1..];
        }
        Prompt {
            segments,
            specials: self.specials,
        }
    }
}

fn push_literal(segments: &mut Vec<Segment>, s: &str) {
    if !s.is_empty() {
        segments.push(Segment::Template(s.to_string()));
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Template text: may contain the family's special tokens.
    Template(String),
    /// Message text: always plain text.
    Message(String),
}

/// A rendered prompt, kept in pieces so that only template text can produce special tokens.
#[derive(Debug, Clone)]
pub struct Prompt {
    segments: Vec<Segment>,
    specials: &'static [&'static str],
}

impl Prompt {
    /// The prompt as one string (what `--show-prompt` prints).
    pub fn text(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Template(t) | Segment::Message(t) => t.as_str(),
            })
            .collect()
    }

    /// Token ids: the template's special tokens as single ids, every other run of text tokenized
    /// as plain text (runs between special tokens are tokenized whole, as llama.cpp does).
    pub fn encode(&self, tokenizer: &Tokenizer) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut run = String::new();
        let flush = |run: &mut String, ids: &mut Vec<u32>| {
            if !run.is_empty() {
                ids.extend(tokenizer.encode(run, false, false));
                run.clear();
            }
        };
        for seg in &self.segments {
            match seg {
                Segment::Message(t) => run.push_str(t),
                Segment::Template(t) => {
                    let mut rest = t.as_str();
                    while let Some((at, special, id)) = self.next_special(rest, tokenizer) {
                        run.push_str(&rest[..at]);
                        flush(&mut run, &mut ids);
                        ids.push(id);
                        rest = &rest[at + special.len()..];
                    }
                    run.push_str(rest);
                }
            }
        }
        flush(&mut run, &mut ids);
        ids
    }

    fn next_special(&self, s: &str, tokenizer: &Tokenizer) -> Option<(usize, &'static str, u32)> {
        self.specials
            .iter()
            .filter_map(|sp| Some((s.find(sp)?, *sp, tokenizer.token_id(sp)?)))
            .min_by_key(|(at, sp, _)| (*at, std::cmp::Reverse(sp.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama2_with_and_without_system() {
        let t = ChatTemplate::new(TemplateFamily::Llama2);
        assert_eq!(
            t.render("Be brief.", "Hi?").text(),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi? [/INST]"
        );
        assert_eq!(t.render("", "Hi?").text(), "<s>[INST] Hi? [/INST]");
    }

    #[test]
    fn chatml_with_and_without_system() {
        let t = ChatTemplate::new(TemplateFamily::ChatMl);
        assert_eq!(
            t.render("S", "U").text(),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render("", "U").text(),
            "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn braces_in_messages_are_not_placeholders() {
        let t = ChatTemplate::new(TemplateFamily::ChatMl);
        let p = t.render("", "fn f() { {user} }");
        assert!(p.text().contains("fn f() { {user} }"));
    }
}
