//! HTML: visible text only. `head`, `script`, `style`, `noscript`, `template`, embedded objects,
//! `svg`, `canvas` and elements with the `hidden` attribute are dropped; `h1`–`h6` become headings;
//! block elements are separated by blank lines, list items and table rows by line breaks, table
//! cells by spaces; whitespace collapses except inside `pre`. Entities are decoded by html5ever.
//! The tree is walked with an explicit edge iterator, so deep nesting cannot overflow the stack.

use super::parse::Parsed;
use crate::normalize::{normalize, TextBuilder};
use ego_tree::iter::Edge;
use scraper::{Html, Node};

const SKIPPED: &[&str] = &[
    "head", "script", "style", "noscript", "template", "iframe", "object", "embed", "svg",
    "canvas", "select", "datalist",
];

const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "caption",
    "center",
    "details",
    "dialog",
    "div",
    "dl",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "header",
    "hgroup",
    "hr",
    "html",
    "legend",
    "main",
    "menu",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "tfoot",
    "thead",
    "ul",
];

const LINES: &[&str] = &["li", "tr", "dt", "dd", "option"];

/// Deepest element nesting [`parse`] takes. Real pages stay far below (a few dozen levels);
/// html5ever's tree builder works in proportion to the depth on each tag, so a file of 80,000
/// nested `div`s took 15 s to parse and one of 200,000 minutes.
pub(super) const MAX_DEPTH: usize = 2_000;

/// Elements that never have an end tag.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

/// One piece of markup, as [`Tags`] reads it.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    /// Text between tags, entities not decoded.
    Text(&'a str),
    /// A start tag: lower-cased name, and whether it ends in `/>` or names a void element.
    Start(String, bool),
    /// An end tag's lower-cased name.
    End(String),
}

/// A linear scan of HTML into text and tags, without a tree: comments, doctypes and processing
/// instructions are skipped, and the bodies of `script` and `style` are passed over whole.
struct Tags<'a> {
    source: &'a str,
    at: usize,
    /// After a `script` or `style` start tag: its end tag comes next.
    raw_end: Option<String>,
}

impl<'a> Tags<'a> {
    fn new(source: &'a str) -> Self {
        Tags {
            source,
            at: 0,
            raw_end: None,
        }
    }
}

impl<'a> Iterator for Tags<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        let s = self.source.as_bytes();
        loop {
            if let Some(name) = self.raw_end.take() {
                let end_tag = format!("</{name}");
                let e = find_ignore_case(s, self.at, end_tag.as_bytes()).unwrap_or(s.len());
                self.at = find(s, e, b">").map_or(s.len(), |g| g + 1);
                return Some(Piece::End(name));
            }
            if self.at >= s.len() {
                return None;
            }
            let i = self.at;
            let Some(off) = s[i..].iter().position(|&c| c == b'<') else {
                self.at = s.len();
                return Some(Piece::Text(&self.source[i..]));
            };
            if off > 0 {
                self.at = i + off;
                return Some(Piece::Text(&self.source[i..i + off]));
            }
            let i = i + 1;
            if s[i..].starts_with(b"!--") {
                self.at = find(s, i, b"-->").map_or(s.len(), |e| e + 3);
                continue;
            }
            if s.get(i).is_some_and(|c| *c == b'!' || *c == b'?') {
                self.at = find(s, i, b">").map_or(s.len(), |e| e + 1);
                continue;
            }
            let closing = s.get(i) == Some(&b'/');
            let start = i + usize::from(closing);
            if !s.get(start).is_some_and(u8::is_ascii_alphabetic) {
                self.at = i;
                return Some(Piece::Text("<")); // a `<` in text
            }
            let end = s[start..]
                .iter()
                .position(|c| !c.is_ascii_alphanumeric())
                .map_or(s.len(), |e| start + e);
            let name = self.source[start..end].to_ascii_lowercase();
            let close = find(s, end, b">").unwrap_or(s.len());
            self.at = (close + 1).min(s.len());
            if closing {
                return Some(Piece::End(name));
            }
            let empty = (close > end && s[close - 1] == b'/') || VOID.contains(&name.as_str());
            if !empty && (name == "script" || name == "style") {
                self.raw_end = Some(name.clone());
            }
            return Some(Piece::Start(name, empty));
        }
    }
}

/// How deep elements nest in `source`, in one linear scan ([`Tags`]): an estimate for
/// malformed markup, exact for well-formed.
pub(super) fn nesting_depth(source: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for piece in Tags::new(source) {
        match piece {
            Piece::Start(_, false) => {
                depth += 1;
                max = max.max(depth);
            }
            Piece::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn find(s: &[u8], from: usize, what: &[u8]) -> Option<usize> {
    s.get(from..)?
        .windows(what.len())
        .position(|w| w == what)
        .map(|p| from + p)
}

fn find_ignore_case(s: &[u8], from: usize, what: &[u8]) -> Option<usize> {
    s.get(from..)?
        .windows(what.len())
        .position(|w| w.eq_ignore_ascii_case(what))
        .map(|p| from + p)
}

/// The text of `source` with every tag removed, in one pass: what a file too deep for [`parse`]
/// yields. What [`parse`] drops (`head`, `script`, `style`, ...) is dropped, the common
/// entities decoded, and block-level tags end a paragraph.
pub(super) fn parse_flat(source: &str) -> Parsed {
    let mut b = TextBuilder::default();
    let mut block = String::new();
    let mut skip_depth = 0usize;
    for piece in Tags::new(source) {
        let name = match &piece {
            Piece::Text(t) => {
                if skip_depth == 0 {
                    block.push_str(&decode_entities(t));
                }
                continue;
            }
            Piece::Start(name, empty) => {
                if SKIPPED.contains(&name.as_str()) && !empty {
                    skip_depth += 1;
                }
                name
            }
            Piece::End(name) => {
                if SKIPPED.contains(&name.as_str()) {
                    skip_depth = skip_depth.saturating_sub(1);
                }
                name
            }
        };
        if BLOCKS.contains(&name.as_str()) || heading_level(name).is_some() {
            b.push_block(&std::mem::take(&mut block));
        } else if LINES.contains(&name.as_str()) || name == "br" {
            block.push('\n');
        } else if is_cell(name) {
            block.push(' ');
        }
    }
    b.push_block(&block);
    Parsed {
        title: None,
        builder: b,
    }
}

/// `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&#39;`, `&nbsp;` and numeric references; others stay as
/// written.
fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest[1..].find(';').map(|e| e + 1).filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let name = &rest[1..e];
            match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => {
                    let n = name.strip_prefix('#')?;
                    let code = match n.strip_prefix(['x', 'X']) {
                        Some(h) => u32::from_str_radix(h, 16).ok()?,
                        None => n.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }
        });
        match (decoded, end) {
            (Some(c), Some(e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

pub(super) fn parse(source: &str) -> Parsed {
    let html = Html::parse_document(source);
    let mut b = TextBuilder::default();
    let mut block = String::new();
    let mut heading: Option<(u8, String, usize)> = None; // level, text, depth it opened at
    let mut first_h1 = None;
    let mut title = None;
    let mut skip_depth = 0usize; // > 0 inside a dropped subtree
    let mut pre_depth = 0usize;
    let mut depth = 0usize;

    for edge in html.tree.root().traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Element(el) => {
                    depth += 1;
                    let name = el.name();
                    if name == "title" && title.is_none() {
                        let t: String = node
                            .descendants()
                            .filter_map(|n| n.value().as_text().map(|t| t.to_string()))
                            .collect();
                        title = Some(normalize(&t).replace('\n', " ")).filter(|t| !t.is_empty());
                    }
                    if skip_depth > 0 || SKIPPED.contains(&name) || el.attr("hidden").is_some() {
                        skip_depth += 1;
                        continue;
                    }
                    if let Some(level) = heading_level(name) {
                        if heading.is_none() {
                            b.push_block(&std::mem::take(&mut block));
                            heading = Some((level, String::new(), depth));
                            continue;
                        }
                    }
                    if name == "pre" {
                        pre_depth += 1;
                    }
                    if name == "br" {
                        match heading.as_mut() {
                            Some((_, h, _)) => h.push(' '),
                            None => block.push('\n'),
                        }
                    }
                    open_or_close(name, &mut block, &mut b, heading.as_mut());
                }
                Node::Text(t) if skip_depth == 0 => {
                    let keep_lines = pre_depth > 0 && heading.is_none();
                    let out = match heading.as_mut() {
                        Some((_, h, _)) => h,
                        None => &mut block,
                    };
                    if keep_lines {
                        out.push_str(t);
                    } else {
                        // Outside `pre`, source line breaks are just spaces.
                        out.extend(t.chars().map(|c| if c.is_whitespace() { ' ' } else { c }));
                    }
                }
                _ => {}
            },
            Edge::Close(node) => {
                let Node::Element(el) = node.value() else {
                    continue;
                };
                let name = el.name();
                let this_depth = depth;
                depth -= 1;
                if skip_depth > 0 {
                    skip_depth -= 1;
                    continue;
                }
                if let Some((level, text, at)) = heading.take() {
                    if at == this_depth {
                        let pushed = b.push_heading(level, &text);
                        if level == 1 && first_h1.is_none() {
                            first_h1 = pushed;
                        }
                        continue;
                    }
                    heading = Some((level, text, at));
                }
                if name == "pre" {
                    pre_depth -= 1;
                }
                open_or_close(name, &mut block, &mut b, heading.as_mut());
            }
        }
    }
    b.push_block(&block);
    Parsed {
        title: title.or(first_h1),
        builder: b,
    }
}

/// What an element's start or end does to the text around it.
fn open_or_close(
    name: &str,
    block: &mut String,
    b: &mut TextBuilder,
    heading: Option<&mut (u8, String, usize)>,
) {
    let out = match heading {
        Some((_, h, _)) => {
            // Inside a heading everything is one line.
            if BLOCKS.contains(&name) || LINES.contains(&name) || is_cell(name) {
                h.push(' ');
            }
            return;
        }
        None => block,
    };
    if BLOCKS.contains(&name) {
        b.push_block(&std::mem::take(out));
    } else if LINES.contains(&name) && !out.trim_end_matches(' ').ends_with('\n') {
        out.push('\n');
    } else if is_cell(name) {
        out.push(' ');
    }
}

fn is_cell(name: &str) -> bool {
    matches!(name, "td" | "th")
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_depth_counts_open_elements() {
        let page = "<!doctype html><html><body><div><p>x</p><br><img src=a /></div></body></html>";
        assert_eq!(nesting_depth(page), 4);
        assert_eq!(
            nesting_depth("<div><script>if (a<b) '<div><div>'</script></div>"),
            2
        );
        assert_eq!(nesting_depth("<!-- <div><div> --><p>x"), 1);
        assert_eq!(nesting_depth("a < b and <3"), 0);
    }

    #[test]
    fn flat_parse_keeps_text_and_drops_scripts() {
        let p = parse_flat(
            "<p>Fish &amp; chips</p><script>var x='<p>no</p>'</script><div>tea&#39;s &lt;3</div>",
        );
        let (text, _, _) = p.builder.finish();
        assert_eq!(text, "Fish & chips\n\ntea's <3");
        let p = parse_flat("<head><title>T</title><style>p{}</style></head><p>a<br/>b</p>");
        assert_eq!(p.builder.finish().0, "a\nb");
    }

    fn run(src: &str) -> (Option<String>, String, Vec<(u8, String)>) {
        let p = parse(src);
        let (text, headings, _) = p.builder.finish();
        for h in &headings {
            assert_eq!(&text[h.offset..h.offset + h.title.len()], h.title);
        }
        let hs = headings.into_iter().map(|h| (h.level, h.title)).collect();
        (p.title, text, hs)
    }

    #[test]
    fn visible_text_blocks_and_headings() {
        let src = r#"<!doctype html><html><head><title> The  Page </title>
            <style>body { color: red }</style><script>var x = "<p>no</p>";</script>
            <meta name="description" content="hidden meta"></head>
            <body><nav>Home | About</nav>
            <h1>Main <em>title</em></h1>
            <p>First   paragraph
               with a line break in the source &amp; an entity &eacute;.</p>
            <div>Block<br>next line</div>
            <noscript>enable js</noscript><template><p>tpl</p></template>
            <p hidden>secret</p>
            <h2>Lists</h2><ul><li>one</li><li>two</li></ul>
            <table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>
            <pre>code  line 1
  line 2</pre><span>inline</span> tail
            </body></html>"#;
        let (title, text, hs) = run(src);
        assert_eq!(title.as_deref(), Some("The Page"));
        assert_eq!(hs, vec![(1, "Main title".into()), (2, "Lists".into())]);
        assert_eq!(
            text,
            "Home | About\n\nMain title\n\nFirst paragraph with a line break in the source & an entity é.\n\n\
             Block\nnext line\n\nLists\n\none\ntwo\n\na b\n1 2\n\ncode line 1\nline 2\n\ninline tail"
        );
        for bad in [
            "color",
            "var x",
            "hidden meta",
            "enable js",
            "tpl",
            "secret",
        ] {
            assert!(!text.contains(bad), "{bad} leaked into {text:?}");
        }
    }

    #[test]
    fn title_falls_back_to_first_h1_and_fragments_work() {
        let (title, text, _) = run("<h2>b</h2><h1>A <b>c</b></h1>text");
        assert_eq!(title.as_deref(), Some("A c"));
        assert_eq!(text, "b\n\nA c\n\ntext");
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let src = format!(
            "{}deep{}",
            "<div><span>".repeat(5_000),
            "</span></div>".repeat(5_000)
        );
        let (_, text, _) = run(&src);
        assert_eq!(text, "deep");
    }
}
