//! A configuration made of several files: the main file, then `conf.d/*.toml` next to it in name order.
//!
//! `[[device]]` and `[[characteristic]]` entries are appended in file order; every other table merges key
//! by key, and a key set in two files is an error that names both places. Every key path of the merged
//! document is indexed to the file and byte offset it came from, so later errors name the right file
//! and line (a conf.d file's first `[[device]]` after two in the main file is `device[2]`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// The arrays of tables that files append to rather than merge.
const APPENDED: &[&str] = &["device", "characteristic"];

/// The directory of extra files, next to the main config file.
pub const CONF_D: &str = "conf.d";

/// One file of the configuration and its text.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// Where a key is written: the file (index into the sources) and the byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub file: usize,
    pub offset: usize,
}

/// A problem found while merging, at a position in one of the files.
#[derive(Debug)]
pub struct MergeError {
    pub at: Pos,
    pub key: String,
    pub message: String,
    /// A file that cannot be parsed: it is left out, so checking the rest would mislead.
    pub syntax: bool,
}

/// The merged document and where each of its key paths was written (the first place, for tables
/// that several files contribute to).
#[derive(Debug, Default)]
pub struct Merged {
    pub root: toml::Table,
    pub spans: HashMap<String, Pos>,
}

/// The files a configuration is read from: `main`, then every `*.toml` in `conf.d/` next to it, in name
/// order (hidden files such as editors' lock files are skipped). No `conf.d` directory is fine.
pub fn files(main: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = vec![main.to_path_buf()];
    let dir = main.parent().unwrap_or(Path::new(".")).join(CONF_D);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut extra = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".toml") && !name.starts_with('.') {
            extra.push(entry.path());
        }
    }
    extra.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    out.extend(extra);
    Ok(out)
}

/// Parses every source and merges them in order. Syntax errors of every file are reported; a file with
/// one does not take part in the merge. Of a key set twice, the first value stays.
pub fn merge(sources: &[Source]) -> (Merged, Vec<MergeError>) {
    let mut merged = Merged::default();
    let mut errors = Vec::new();
    for (file, source) in sources.iter().enumerate() {
        let at = |offset: usize| Pos { file, offset };
        let doc = match DeTable::parse(&source.text) {
            Ok(doc) => doc,
            Err(e) => {
                errors.push(MergeError {
                    at: at(e.span().map(|s| s.start).unwrap_or(0)),
                    key: String::new(),
                    message: format!("TOML syntax error: {}", e.message().trim()),
                    syntax: true,
                });
                continue;
            }
        };
        let table: toml::Table = match toml::from_str(&source.text) {
            Ok(t) => t,
            Err(e) => {
                errors.push(MergeError {
                    at: at(e.span().map(|s| s.start).unwrap_or(0)),
                    key: String::new(),
                    message: e.message().trim().to_string(),
                    syntax: true,
                });
                continue;
            }
        };
        // This file's entries of the appended arrays continue the numbering of the files before it.
        let offsets: HashMap<&str, usize> = APPENDED
            .iter()
            .map(|k| {
                let n = merged
                    .root
                    .get(*k)
                    .and_then(|v| v.as_array())
                    .map_or(0, Vec::len);
                (*k, n)
            })
            .collect();
        let mut spans = HashMap::new();
        index_table(&mut spans, "", doc.get_ref(), file, &offsets);
        merge_table(
            &mut merged.root,
            table,
            "",
            &spans,
            &merged.spans,
            sources,
            &mut errors,
        );
        for (path, pos) in spans {
            merged.spans.entry(path).or_insert(pos);
        }
    }
    (merged, errors)
}

fn merge_table(
    dst: &mut toml::Table,
    src: toml::Table,
    prefix: &str,
    here: &HashMap<String, Pos>,
    before: &HashMap<String, Pos>,
    sources: &[Source],
    errors: &mut Vec<MergeError>,
) {
    for (key, value) in src {
        let path = join(prefix, &key);
        let appended = prefix.is_empty() && APPENDED.contains(&key.as_str());
        match (dst.get_mut(&key), value) {
            (None, value) => {
                dst.insert(key, value);
            }
            (Some(toml::Value::Array(a)), toml::Value::Array(b)) if appended => a.extend(b),
            (Some(toml::Value::Table(d)), toml::Value::Table(s)) => {
                merge_table(d, s, &path, here, before, sources, errors)
            }
            (Some(_), _) => {
                let first = before
                    .get(&path)
                    .map(|p| describe(sources, *p))
                    .unwrap_or_else(|| "an earlier file".to_string());
                errors.push(MergeError {
                    at: here.get(&path).copied().unwrap_or(Pos {
                        file: sources.len().saturating_sub(1),
                        offset: 0,
                    }),
                    key: path,
                    message: format!("set twice: here and in {first}; set it in one file only"),
                    syntax: false,
                });
            }
        }
    }
}

/// `file:line:column` of a position.
pub fn describe(sources: &[Source], pos: Pos) -> String {
    match sources.get(pos.file) {
        Some(s) => {
            let (line, column) = line_col(&s.text, pos.offset);
            format!("{}:{line}:{column}", s.path.display())
        }
        None => "another file".to_string(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

pub fn join(prefix: &str, inner: &str) -> String {
    match (prefix.is_empty(), inner.is_empty()) {
        (true, _) => inner.to_string(),
        (_, true) => prefix.to_string(),
        _ if inner.starts_with('[') => format!("{prefix}{inner}"),
        _ => format!("{prefix}.{inner}"),
    }
}

/// Records the position of every key and array element of one file. Top-level appended arrays start
/// at `offsets[key]`.
fn index_table(
    spans: &mut HashMap<String, Pos>,
    prefix: &str,
    table: &DeTable<'_>,
    file: usize,
    offsets: &HashMap<&str, usize>,
) {
    for (key, value) in table.iter() {
        let name: &str = key.get_ref();
        let path = join(prefix, name);
        spans.insert(
            path.clone(),
            Pos {
                file,
                offset: key.span().start,
            },
        );
        let first = if prefix.is_empty() {
            offsets.get(name).copied().unwrap_or(0)
        } else {
            0
        };
        index_value(spans, &path, value.get_ref(), file, first);
    }
}

fn index_value(
    spans: &mut HashMap<String, Pos>,
    path: &str,
    value: &DeValue<'_>,
    file: usize,
    first: usize,
) {
    match value {
        DeValue::Table(t) => index_table(spans, path, t, file, &HashMap::new()),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = format!("{path}[{}]", i + first);
                spans.insert(
                    p.clone(),
                    Pos {
                        file,
                        offset: item.span().start,
                    },
                );
                index_value(spans, &p, item.get_ref(), file, 0);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(path: &str, text: &str) -> Source {
        Source {
            path: PathBuf::from(path),
            text: text.to_string(),
        }
    }

    #[test]
    fn arrays_append_tables_merge_and_spans_name_the_file() {
        let (m, errors) = merge(&[
            src(
                "main.toml",
                "[agent]\nid = \"a\"\n[[device]]\nname = \"d0\"\n[[device]]\nname = \"d1\"\n",
            ),
            src(
                "conf.d/10.toml",
                "[agent]\nlog_level = \"debug\"\n\n[[device]]\nname = \"d2\"\n",
            ),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        let devices = m.root["device"].as_array().unwrap();
        let names: Vec<&str> = devices
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["d0", "d1", "d2"]);
        assert_eq!(m.root["agent"]["log_level"].as_str(), Some("debug"));
        let pos = m.spans["device[2].name"];
        assert_eq!(pos.file, 1);
        assert_eq!(line_col(&devices_text(), pos.offset).0, 5);
        assert_eq!(m.spans["agent.log_level"].file, 1);
        assert_eq!(
            m.spans["agent"].file, 0,
            "a shared table points at its first file"
        );
    }

    fn devices_text() -> String {
        "[agent]\nlog_level = \"debug\"\n\n[[device]]\nname = \"d2\"\n".to_string()
    }

    #[test]
    fn a_key_set_twice_names_both_places() {
        let sources = [
            src("main.toml", "[mqtt]\nurl = \"mqtt://a\"\n"),
            src("conf.d/a.toml", "\n[mqtt]\nurl = \"mqtt://b\"\n"),
        ];
        let (_, errors) = merge(&sources);
        assert_eq!(errors.len(), 1);
        let e = &errors[0];
        assert_eq!((e.at.file, e.key.as_str()), (1, "mqtt.url"));
        assert_eq!(line_col(&sources[1].text, e.at.offset), (3, 1));
        assert!(e.message.contains("main.toml:2:1"), "{}", e.message);
    }

    #[test]
    fn syntax_errors_of_every_file() {
        let (_, errors) = merge(&[src("a.toml", "x = \"\n"), src("b.toml", "[y\n")]);
        let files: Vec<usize> = errors.iter().map(|e| e.at.file).collect();
        assert_eq!(files, [0, 1]);
    }

    #[test]
    fn files_lists_conf_d_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("lineside.toml");
        assert_eq!(files(&main).unwrap(), std::slice::from_ref(&main));
        let d = dir.path().join(CONF_D);
        std::fs::create_dir(&d).unwrap();
        for n in ["20-b.toml", "10-a.toml", ".#10-a.toml", "notes.txt"] {
            std::fs::write(d.join(n), "").unwrap();
        }
        assert_eq!(
            files(&main).unwrap(),
            [main, d.join("10-a.toml"), d.join("20-b.toml")]
        );
    }
}
