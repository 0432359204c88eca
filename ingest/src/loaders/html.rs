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
