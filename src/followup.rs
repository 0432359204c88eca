//! Follow-up questions in a conversation ("and when did it open?") made standalone before
//! retrieval, from the earlier questions. A 135M chat model cannot be trusted to rewrite a
//! question, so this is plain text work: a question that leans on an earlier one (a personal
//! pronoun, or no topic word of its own) gets that question's subject in place of the pronoun,
//! or after it. Earlier questions are themselves made standalone first, so a third turn still
//! finds the first one's subject.
use crate::retrieve;

/// Personal pronouns that point back at an earlier subject. Demonstratives ("this", "that",
/// "there") are left out: they are as often a determiner, a conjunction or "there is".
const PRONOUNS: &[&str] = &[
    "it", "its", "they", "them", "their", "he", "him", "his", "she", "her",
];

/// `question` made standalone given the earlier user questions of the conversation (oldest
/// first). A question that stands on its own is returned unchanged.
///
/// ```
/// let earlier = ["Who designed the Kessel Harbour Bridge?".to_string()];
/// assert_eq!(
///     rag::standalone_question(&earlier, "And when did it open?"),
///     "And when did the Kessel Harbour Bridge open?"
/// );
/// assert_eq!(rag::standalone_question(&earlier, "Who runs the ferry?"), "Who runs the ferry?");
/// ```
pub fn standalone_question(earlier: &[String], question: &str) -> String {
    // Each earlier question as it was searched: the subjects carry over turn after turn.
    let mut resolved: Vec<String> = Vec::with_capacity(earlier.len());
    for q in earlier {
        let r = rewrite(&resolved, q);
        resolved.push(r);
    }
    rewrite(&resolved, question)
}

fn rewrite(earlier: &[String], question: &str) -> String {
    let question = question.trim();
    let Some(subject) = earlier.iter().rev().find_map(|q| subject_of(q)) else {
        return question.to_string();
    };
    let words: Vec<&str> = question.split_whitespace().collect();
    // The first pronoun takes the subject's place ("its" becomes "the subject's"), keeping
    // the punctuation around it.
    let pronoun = words
        .iter()
        .position(|w| PRONOUNS.contains(&split_word(w).1.to_lowercase().as_str()));
    if let Some(i) = pronoun {
        let (lead, bare, tail) = split_word(words[i]);
        let replacement = match bare.to_lowercase().as_str() {
            "its" | "their" | "his" | "her" => format!("{lead}{subject}'s{tail}"),
            _ => format!("{lead}{subject}{tail}"),
        };
        let mut out: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        out[i] = replacement;
        return out.join(" ");
    }
    // No pronoun but no topic word either ("And the ferry?" has one; "When?" has none).
    let topic = question
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !retrieve::is_stopword(w) && w.to_lowercase() != "and")
        .count();
    if topic == 0 && !question.is_empty() {
        return format!("{} ({subject})", question.trim_end_matches('?')) + "?";
    }
    question.to_string()
}

/// A word as (leading punctuation, the word, trailing punctuation): `"(it)?"` is
/// `("(", "it", ")?")`.
fn split_word(w: &str) -> (&str, &str, &str) {
    let start = w.find(char::is_alphanumeric).unwrap_or(w.len());
    let end = w.rfind(char::is_alphanumeric).map_or(start, |i| {
        i + w[i..].chars().next().map_or(1, char::len_utf8)
    });
    let end = end.max(start);
    (&w[..start], &w[start..end], &w[end..])
}

/// What an earlier question was about: its longest run of capitalised words after the first
/// word ("the Kessel Harbour Bridge"; stopwords such as "I" end a run), else the topic word
/// after its first article ("the ferry"), else its last topic word.
fn subject_of(question: &str) -> Option<String> {
    let words: Vec<&str> = question.split_whitespace().collect();
    let clean = |w: &str| split_word(w).1.to_string();
    let mut best: Vec<String> = Vec::new();
    let mut run: Vec<String> = Vec::new();
    for w in words.iter().skip(1) {
        let c = clean(w);
        if c.chars().next().is_some_and(char::is_uppercase) && !retrieve::is_stopword(&c) {
            run.push(c);
        } else {
            if run.len() > best.len() {
                best = std::mem::take(&mut run);
            }
            run.clear();
        }
    }
    if run.len() > best.len() {
        best = run;
    }
    if !best.is_empty() {
        return Some(format!("the {}", best.join(" ")));
    }
    let cleaned: Vec<String> = words.iter().map(|w| clean(w)).collect();
    let is_topic = |w: &str| !w.is_empty() && !retrieve::is_stopword(w);
    if let Some(w) = cleaned.windows(2).find_map(|p| {
        (matches!(p[0].to_lowercase().as_str(), "the" | "a" | "an") && is_topic(&p[1]))
            .then(|| p[1].clone())
    }) {
        return Some(format!("the {w}"));
    }
    cleaned
        .iter()
        .rev()
        .find(|w| is_topic(w))
        .map(|w| format!("the {w}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn pronouns_take_the_earlier_subject() {
        let e = s(&["Who designed the Kessel Harbour Bridge?"]);
        assert_eq!(
            standalone_question(&e, "When did it open?"),
            "When did the Kessel Harbour Bridge open?"
        );
        assert_eq!(
            standalone_question(&e, "How long is its lifting span?"),
            "How long is the Kessel Harbour Bridge's lifting span?"
        );
        assert_eq!(
            standalone_question(&e, "When did (it) open?"),
            "When did (the Kessel Harbour Bridge) open?"
        );
        // The latest earlier question with a subject counts.
        let e = s(&[
            "Who designed the Kessel Harbour Bridge?",
            "Where does the ferry leave from?",
        ]);
        assert_eq!(
            standalone_question(&e, "how long does it take?"),
            "how long does the ferry take?"
        );
        // A question with its own topic is left alone; no earlier question, nothing to do.
        assert_eq!(
            standalone_question(&e, "Who runs the library?"),
            "Who runs the library?"
        );
        assert_eq!(
            standalone_question(&[], "When did it open?"),
            "When did it open?"
        );
        // No pronoun and no topic word: the subject is added.
        let e = s(&["Who designed the Kessel Harbour Bridge?"]);
        assert_eq!(
            standalone_question(&e, "And when?"),
            "And when (the Kessel Harbour Bridge)?"
        );
    }

    #[test]
    fn the_third_turn_still_knows_the_first_subject() {
        let e = s(&[
            "Who designed the Kessel Harbour Bridge?",
            "When did it open?",
        ]);
        assert_eq!(
            standalone_question(&e, "How long is its span?"),
            "How long is the Kessel Harbour Bridge's span?"
        );
    }

    #[test]
    fn words_that_are_not_references_stay() {
        let e = s(&["Who designed the Kessel Harbour Bridge?"]);
        for q in [
            "Are there any tolls on the ferry?",
            "Who said that the ferry was late?",
            "When was this bridge built?",
        ] {
            assert_eq!(standalone_question(&e, q), q);
        }
        // "I" is no subject.
        let e = s(&["Can I walk across the bridge?"]);
        assert_eq!(
            standalone_question(&e, "When did it open?"),
            "When did the bridge open?"
        );
        // Odd input: nothing to rewrite, no panic.
        for q in ["", "?", "¿Qué?", "it", "ïts"] {
            let _ = standalone_question(&e, q);
        }
    }
}
