//! Filter expressions: the text form of a [`Filter`] that `rag search --filter`, `rag ask
//! --filter` and the server's `filter` parameter share.
use rag_index::Filter;

use crate::error::{Error, Result};

/// Filter expressions (`rag search --filter`, the server's `filter`) as one [`Filter`]: every
/// one must hold, so a second expression of a kind narrows the first (`type:pdf,md type:md` is
/// `type:md`), and one that leaves nothing to match is an error.
///
/// `path:PREFIX`: documents under PREFIX; a relative prefix is made absolute from the current
/// folder (stored paths are absolute), keeping a trailing `/` so that `path:docs/` does not
/// also match `docs-old/`. `type:EXT[,EXT...]`: extensions, any case, the dot optional.
/// `after:YYYY-MM-DD` / `before:YYYY-MM-DD`: files modified on or after / before that day
/// (UTC). A bad expression is an [`Error::InvalidOption`] that quotes it and names the forms.
///
/// ```
/// let f = rag::parse_filters(&["type:pdf,docx", "after:2024-01-01"]).unwrap();
/// assert_eq!(f.file_types, ["pdf", "docx"]);
/// assert!(rag::parse_filters(&["kind:pdf"]).unwrap_err().to_string().contains("type:EXT"));
/// ```
pub fn parse_filters(values: &[impl AsRef<str>]) -> Result<Filter> {
    let mut filter = Filter::default();
    for s in values {
        let s = s.as_ref();
        let mut one = Filter::default();
        if let Some(prefix) = s.strip_prefix("path:") {
            ensure(!prefix.is_empty(), || {
                "filter `path:` needs a path after the colon".into()
            })?;
            one.path_prefix = Some(absolute_prefix(prefix)?);
        } else if let Some(types) = s.strip_prefix("type:") {
            let list: Vec<&str> = types.split(',').map(str::trim).collect();
            ensure(
                list.iter().all(|t| !t.trim_start_matches('.').is_empty()),
                || format!("filter `{s}`: the form is type:EXT[,EXT...], e.g. type:pdf,docx"),
            )?;
            one = one.with_file_types(list);
        } else if let Some(day) = s.strip_prefix("after:") {
            one.modified_after = Some(
                unix_day(day).map_err(|e| Error::InvalidOption(format!("filter `{s}`: {e}")))?,
            );
        } else if let Some(day) = s.strip_prefix("before:") {
            one.modified_before = Some(
                unix_day(day).map_err(|e| Error::InvalidOption(format!("filter `{s}`: {e}")))?,
            );
        } else {
            return Err(Error::InvalidOption(format!(
                "filter `{s}`: the forms are path:DIR (documents under DIR), type:EXT[,EXT...] \
                 (documents with these extensions, e.g. type:pdf,docx), after:YYYY-MM-DD and \
                 before:YYYY-MM-DD (files modified on or after / before that day)"
            )));
        }
        filter = both(&filter, one).map_err(|what| {
            Error::InvalidOption(format!(
                "filter `{s}` asks for {what} outside the filters before it: no document could \
                 match them all"
            ))
        })?;
    }
    Ok(filter)
}

/// The documents both filters let through: the deeper of two nested path prefixes, the file
/// types in both lists, the later `after` and the earlier `before`. When no document could
/// match both (two folders apart, no file type in common), what part of `b` clashes with `a`
/// (`"documents under /x/"`, `"file types"`).
pub(crate) fn both(a: &Filter, mut b: Filter) -> std::result::Result<Filter, String> {
    b.path_prefix = match (a.path_prefix.clone(), b.path_prefix) {
        (Some(x), Some(y)) if y.starts_with(&x) => Some(y),
        (Some(x), Some(y)) if x.starts_with(&y) => Some(x),
        (Some(_), Some(y)) => return Err(format!("documents under {y}")),
        (x, y) => y.or(x),
    };
    if !a.file_types.is_empty() {
        if b.file_types.is_empty() {
            b.file_types = a.file_types.clone();
        } else {
            b.file_types.retain(|t| a.file_types.contains(t));
            if b.file_types.is_empty() {
                return Err("file types".into());
            }
        }
    }
    b.modified_after = b.modified_after.max(a.modified_after);
    b.modified_before = match (b.modified_before, a.modified_before) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    Ok(b)
}

/// The Unix time of 00:00 UTC on the day `YYYY-MM-DD`.
fn unix_day(s: &str) -> Result<i64, String> {
    let bad = || format!("`{s}` is not a date of the form YYYY-MM-DD, e.g. 2024-03-31");
    let mut parts = s.splitn(3, '-');
    let mut next = |len: usize| -> Result<i64, String> {
        let p = parts.next().filter(|p| p.len() == len).ok_or_else(bad)?;
        p.parse::<i64>().map_err(|_| bad())
    };
    let (y, m, d) = (next(4)?, next(2)?, next(2)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > days_in[(m - 1) as usize] {
        return Err(bad());
    }
    // Days from 1970-01-01 to y-m-d (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) * 86_400)
}

fn absolute_prefix(prefix: &str) -> Result<String> {
    let looks_remote = prefix.contains("://");
    let mut p = if looks_remote || std::path::Path::new(prefix).is_absolute() {
        prefix.to_string()
    } else {
        std::path::absolute(prefix)
            .map_err(|e| Error::InvalidOption(format!("filter `path:{prefix}`: {e}")))?
            .to_string_lossy()
            .into_owned()
    };
    if prefix.ends_with('/') && !p.ends_with('/') {
        p.push('/');
    }
    Ok(p)
}

fn ensure(ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidOption(message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_unix_times_at_utc_midnight() {
        assert_eq!(unix_day("1970-01-01"), Ok(0));
        assert_eq!(unix_day("2000-02-29"), Ok(951_782_400));
        assert_eq!(unix_day("2024-03-01"), Ok(1_709_251_200));
        assert_eq!(unix_day("1969-12-31"), Ok(-86_400));
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "24-01-01",
            "2024-01-01x",
            "",
        ] {
            assert!(unix_day(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_combine() {
        let f = parse_filters(&[
            "type:PDF,.md".to_string(),
            "after:2024-01-01".to_string(),
            "before:2024-02-01".to_string(),
            "path:/docs/".to_string(),
        ])
        .unwrap();
        assert_eq!(f.file_types, ["pdf", "md"]);
        assert_eq!(f.path_prefix.as_deref(), Some("/docs/"));
        assert_eq!(
            (f.modified_after, f.modified_before),
            (Some(1_704_067_200), Some(1_706_745_600))
        );
        assert!(f.matches("/docs/a.pdf", Some(1_705_000_000)));
        assert!(!f.matches("/docs/a.pdf", Some(1_707_000_000)));
        for bad in ["kind:pdf", "type:", "type:pdf,", "after:yesterday", "path:"] {
            let e = parse_filters(&[bad]).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        let e = parse_filters(&["path:/a/", "path:/b/"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("path:/b/") && e.contains("no document"), "{e}");
        // Every expression must hold: a second one of a kind narrows the first.
        let f = parse_filters(&["path:/a/", "path:/a/b/", "type:pdf,md", "type:md,docx"]).unwrap();
        assert_eq!(f.path_prefix.as_deref(), Some("/a/b/"));
        assert_eq!(f.file_types, ["md"]);
        let e = parse_filters(&["type:pdf", "type:md"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("type:md") && e.contains("file types"), "{e}");
        let f = parse_filters(&[
            "after:2024-01-01",
            "after:2023-01-01",
            "before:2024-03-01",
            "before:2025-01-01",
        ])
        .unwrap();
        assert_eq!(
            (f.modified_after, f.modified_before),
            (Some(1_704_067_200), Some(1_709_251_200))
        );
        assert!(parse_filters(&[] as &[&str]).unwrap().is_empty());
    }
}
