//! Markdown: the text is kept as written (emphasis, links and code fences stay as text); ATX headings
//! (`# Title`, up to three spaces of indent, optional closing `#`s) and single-line setext headings
//! (`Title` over `===` or `---`, after a blank line) become headings with their markers removed.
//! `#` lines inside fenced code blocks are not headings.

use super::parse::Parsed;
use crate::normalize::TextBuilder;

pub(super) fn parse(source: &str) -> Parsed {
    let mut b = TextBuilder::default();
    let mut title = None;
    let mut body = String::new();
    let mut fence: Option<(char, usize)> = None;
    let lines: Vec<&str> = source.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(open) = fence {
            if fence_marker(line).is_some_and(|(c, n)| c == open.0 && n >= open.1) {
                fence = None;
            }
        } else if let Some(marker) = fence_marker(line) {
            fence = Some(marker);
        } else {
            let heading = atx_heading(line).or_else(|| {
                let after_blank = i == 0 || lines[i - 1].trim().is_empty();
                let level = lines.get(i + 1).and_then(|next| setext_level(next))?;
                (after_blank && !line.trim().is_empty() && indent(line) <= 3)
                    .then_some((level, line.trim()))
            });
            if let Some((level, text)) = heading {
                b.push_block(&body);
                body.clear();
                let pushed = b.push_heading(level, text);
                if level == 1 && title.is_none() {
                    title = pushed;
                }
                if atx_heading(line).is_none() {
                    i += 1; // skip the setext underline
                }
                i += 1;
                continue;
            }
        }
        body.push_str(line);
        body.push('\n');
        i += 1;
    }
    b.push_block(&body);
    Parsed { title, builder: b }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// `(level, text)` of an ATX heading line.
fn atx_heading(line: &str) -> Option<(u8, &str)> {
    if indent(line) > 3 {
        return None;
    }
    let rest = line.trim_start_matches(' ');
    let hashes = rest.len() - rest.trim_start_matches('#').len();
    if !(1..=6).contains(&hashes) {
        return None;
    }
    let rest = &rest[hashes..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None; // "#tag" is not a heading
    }
    let mut text = rest.trim();
    // A closing sequence of #s preceded by a space (or making up the whole text) is dropped.
    let without = text.trim_end_matches('#');
    if without.is_empty() || without.ends_with([' ', '\t']) {
        text = without.trim_end();
    }
    Some((hashes as u8, text))
}

/// The level of a setext underline (`===` → 1, `---` → 2).
fn setext_level(line: &str) -> Option<u8> {
    if indent(line) > 3 {
        return None;
    }
    let t = line.trim();
    let first = t.chars().next()?;
    if !matches!(first, '=' | '-') || !t.chars().all(|c| c == first) {
        return None;
    }
    Some(if first == '=' { 1 } else { 2 })
}

/// `(char, run length)` when the line opens or closes a code fence.
fn fence_marker(line: &str) -> Option<(char, usize)> {
    if indent(line) > 3 {
        return None;
    }
    let t = line.trim_start();
    let c = t.chars().next().filter(|c| matches!(c, '`' | '~'))?;
    let n = t.len() - t.trim_start_matches(c).len();
    (n >= 3).then_some((c, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &str) -> (Option<String>, String, Vec<(u8, String)>) {
        let p = parse(src);
        let (text, headings, pages) = p.builder.finish();
        assert!(pages.is_empty());
        for h in &headings {
            assert_eq!(&text[h.offset..h.offset + h.title.len()], h.title);
        }
        let hs = headings.into_iter().map(|h| (h.level, h.title)).collect();
        (p.title, text, hs)
    }

    #[test]
    fn atx_headings_and_title() {
        let (title, text, hs) =
            run("intro line\n\n# Guide #\n\nSome *text*.\n\n## Install ##\nrun `x`\n#tag is not a heading\n");
        assert_eq!(title.as_deref(), Some("Guide"));
        assert_eq!(
            text,
            "intro line\n\nGuide\n\nSome *text*.\n\nInstall\n\nrun `x`\n#tag is not a heading"
        );
        assert_eq!(hs, vec![(1, "Guide".into()), (2, "Install".into())]);
    }

    #[test]
    fn code_fences_hide_headings_and_stay_as_text() {
        let (title, text, hs) =
            run("## Usage\n\n```sh\n# not a heading\nls\n```\n\n    # indented code\n");
        assert_eq!(title, None);
        assert_eq!(hs, vec![(2, "Usage".into())]);
        assert_eq!(
            text,
            "Usage\n\n```sh\n# not a heading\nls\n```\n\n# indented code"
        );
    }

    #[test]
    fn setext_headings_after_blank_line() {
        let (title, _, hs) = run("Title\n=====\n\nSub\n---\ntext\n\nnot\nsetext\n---\n");
        assert_eq!(title.as_deref(), Some("Title"));
        assert_eq!(hs, vec![(1, "Title".into()), (2, "Sub".into())]);
    }

    #[test]
    fn atx_edge_cases() {
        assert_eq!(atx_heading("####### seven"), None);
        assert_eq!(atx_heading("#"), Some((1, "")));
        assert_eq!(atx_heading("   ### a # b ###"), Some((3, "a # b")));
        assert_eq!(atx_heading("## C#"), Some((2, "C#")));
        assert_eq!(atx_heading("    # code"), None);
    }
}
