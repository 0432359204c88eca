//! Rebuilding a damaged PDF (a truncated download, a hand-edited file) the way qpdf and pdfminer
//! recover: scan the file for `N G obj` headers, copy each object into a fresh file, correcting
//! stream `/Length`s from where `endstream` really is, and write a new cross-reference table and
//! trailer. Objects stored inside object streams cannot be found this way, so recovery is partial
//! for such files. Only used after lopdf has refused the file.

use std::collections::BTreeMap;
use std::fmt::Write;

/// A rebuilt copy of the file, or `None` when no object or no document catalog can be found.
pub(super) fn rebuild(bytes: &[u8]) -> Option<Vec<u8>> {
    let objects = scan_objects(bytes);
    if objects.is_empty() {
        return None;
    }
    let root = last_reference(bytes, b"/Root")
        .filter(|(num, _)| objects.contains_key(num))
        .or_else(|| find_catalog(bytes, &objects))?;
    let info = last_reference(bytes, b"/Info").filter(|(num, _)| objects.contains_key(num));

    let mut out = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = BTreeMap::new();
    let mut starts: Vec<usize> = objects.values().map(|&(_, off)| off).collect();
    starts.sort_unstable();
    for (&num, &(generation, start)) in &objects {
        let next = starts[starts.partition_point(|&s| s <= start)..]
            .first()
            .copied()
            .unwrap_or(bytes.len());
        let body = &bytes[start..next];
        let body = match find(body, b"endobj") {
            Some(end) => &body[..end + 6],
            None => body,
        };
        offsets.insert(num, (generation, out.len()));
        out.extend_from_slice(&fix_stream_length(body));
        out.push(b'\n');
    }

    let size = objects.keys().next_back().map_or(1, |&n| n + 1);
    let xref_at = out.len();
    let mut table = format!("xref\n0 {size}\n0000000000 65535 f \n");
    for num in 1..size {
        match offsets.get(&num) {
            Some(&(generation, offset)) => {
                let _ = writeln!(table, "{offset:010} {generation:05} n ");
            }
            None => table.push_str("0000000000 00000 f \n"),
        }
    }
    let _ = write!(
        table,
        "trailer\n<< /Size {size} /Root {} {} R",
        root.0, root.1
    );
    if let Some((num, generation)) = info {
        let _ = write!(table, " /Info {num} {generation} R");
    }
    let _ = write!(table, " >>\nstartxref\n{xref_at}\n%%EOF\n");
    out.extend_from_slice(table.as_bytes());
    Some(out)
}

/// An object's bytes with its stream's `/Length` set to the distance from `stream` to the last
/// `endstream` (indirect lengths are replaced too); unchanged when it has no stream.
fn fix_stream_length(object: &[u8]) -> Vec<u8> {
    let (Some(kw), Some(end)) = (find(object, b"stream"), rfind(object, b"endstream")) else {
        return object.to_vec();
    };
    let mut data_start = kw + 6;
    if object.get(data_start) == Some(&b'\r') {
        data_start += 1;
    }
    if object.get(data_start) == Some(&b'\n') {
        data_start += 1;
    }
    let mut data_end = end.max(data_start);
    for eol in [b'\n', b'\r'] {
        if data_end > data_start && object[data_end - 1] == eol {
            data_end -= 1;
        }
    }
    let dict = &object[..kw];
    let Some(key) = rfind(dict, b"/Length") else {
        return object.to_vec();
    };
    // The value: an integer, or an `N G R` reference.
    let value_start = key + 7;
    let mut tokens = Vec::new();
    let mut i = value_start;
    while tokens.len() < 3 {
        while i < dict.len() && dict[i].is_ascii_whitespace() {
            i += 1;
        }
        let t = i;
        while i < dict.len() && (dict[i].is_ascii_alphanumeric()) {
            i += 1;
        }
        if t == i {
            break;
        }
        tokens.push((t, i));
    }
    let is_ref = tokens.len() == 3 && &dict[tokens[2].0..tokens[2].1] == b"R";
    let value_end = match (is_ref, tokens.first()) {
        (true, _) => tokens[2].1,
        (false, Some(&(_, e))) => e,
        (false, None) => return object.to_vec(),
    };
    let mut fixed = Vec::with_capacity(object.len() + 8);
    fixed.extend_from_slice(&object[..value_start]);
    fixed.extend_from_slice(format!(" {}", data_end - data_start).as_bytes());
    fixed.extend_from_slice(&object[value_end..]);
    fixed
}

/// `object number → (generation, offset)` of every `N G obj` header; a later definition wins, as
/// in an incremental update.
fn scan_objects(bytes: &[u8]) -> BTreeMap<u32, (u16, usize)> {
    let mut objects = BTreeMap::new();
    let mut from = 0;
    while let Some(found) = find(&bytes[from..], b"obj") {
        let at = from + found;
        from = at + 3;
        if bytes.get(at + 3).is_some_and(|b| b.is_ascii_alphanumeric()) {
            continue;
        }
        if let Some((num, generation, start)) = header_before(bytes, at) {
            objects.insert(num, (generation, start));
        }
    }
    objects
}

/// Parses `N G ` backwards from the `obj` at `at`: the number, generation and where `N` starts.
fn header_before(bytes: &[u8], at: usize) -> Option<(u32, u16, usize)> {
    let mut i = at;
    let skip_space = |mut i: usize| {
        let end = i;
        while i > 0 && bytes[i - 1].is_ascii_whitespace() {
            i -= 1;
        }
        (i < end).then_some(i)
    };
    let digits = |mut i: usize| {
        let end = i;
        while i > 0 && bytes[i - 1].is_ascii_digit() {
            i -= 1;
        }
        (i < end && end - i <= 10).then(|| (std::str::from_utf8(&bytes[i..end]).ok(), i))
    };
    i = skip_space(i)?;
    let (generation, g_start) = digits(i)?;
    i = skip_space(g_start)?;
    let (num, n_start) = digits(i)?;
    if n_start > 0 && !bytes[n_start - 1].is_ascii_whitespace() {
        return None;
    }
    Some((num?.parse().ok()?, generation?.parse().ok()?, n_start))
}

/// The `N G R` after the last occurrence of `key` (e.g. `/Root`).
fn last_reference(bytes: &[u8], key: &[u8]) -> Option<(u32, u16)> {
    let at = rfind(bytes, key)? + key.len();
    let tail = &bytes[at..bytes.len().min(at + 40)];
    let ascii = tail
        .iter()
        .position(|b| !b.is_ascii())
        .unwrap_or(tail.len());
    let rest = std::str::from_utf8(&tail[..ascii]).ok()?;
    let mut parts = rest.split_ascii_whitespace();
    let num = parts.next()?.parse().ok()?;
    let generation = parts.next()?.parse().ok()?;
    parts.next()?.starts_with('R').then_some((num, generation))
}

/// The object whose body holds `/Type /Catalog`, when the trailer's `/Root` is lost.
fn find_catalog(bytes: &[u8], objects: &BTreeMap<u32, (u16, usize)>) -> Option<(u32, u16)> {
    let mut by_offset: Vec<(usize, u32, u16)> =
        objects.iter().map(|(&n, &(g, off))| (off, n, g)).collect();
    by_offset.sort_unstable();
    let mut from = 0;
    while let Some(found) = find(&bytes[from..], b"/Catalog") {
        let at = from + found;
        from = at + 8;
        let i = by_offset.partition_point(|&(off, _, _)| off < at);
        if i > 0 {
            let (_, num, generation) = by_offset[i - 1];
            return Some((num, generation));
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_object_headers() {
        let pdf = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n12 3 obj (x) endobj\nx1 0 obj\n/ObjStm";
        let objs = scan_objects(pdf);
        assert_eq!(objs.get(&1), Some(&(0, 9)));
        assert_eq!(
            objs.get(&12),
            Some(&(3, pdf.windows(2).position(|w| w == b"12").unwrap()))
        );
        assert_eq!(objs.len(), 2, "{objs:?}");
        assert_eq!(find_catalog(pdf, &objs), Some((1, 0)));
    }

    #[test]
    fn stream_lengths_are_corrected() {
        let obj = b"5 0 obj\n<< /Length 3 >>\nstream\nBT (Hello) Tj ET\nendstream\nendobj";
        let fixed = fix_stream_length(obj);
        assert_eq!(
            String::from_utf8(fixed).unwrap(),
            "5 0 obj\n<< /Length 16 >>\nstream\nBT (Hello) Tj ET\nendstream\nendobj"
        );
        let indirect = b"<< /Length 9 0 R /Filter /X >>\r\nstream\r\nab\r\nendstream";
        assert_eq!(
            String::from_utf8(fix_stream_length(indirect)).unwrap(),
            "<< /Length 2 /Filter /X >>\r\nstream\r\nab\r\nendstream"
        );
        assert_eq!(fix_stream_length(b"<< /A 1 >>"), b"<< /A 1 >>");
    }

    #[test]
    fn references_after_keys() {
        assert_eq!(
            last_reference(b"<< /Root 1 0 R /Size 3 >> /Root 7 2 R>>", b"/Root"),
            Some((7, 2))
        );
        assert_eq!(last_reference(b"/Root 1 0 obj", b"/Root"), None);
        assert_eq!(last_reference(b"nothing", b"/Info"), None);
    }
}
