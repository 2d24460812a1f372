//! RFC 4475 corpus loader shared by the conformance test files (kept in `tests/` so the test
//! crates do not depend on what the library exports).
//!
//! `data/rfc4475/` holds the 49 torture messages as exact bytes, the RFC's own classification
//! (`MANIFEST.tsv`: section, class, title) and what Estuary does with each
//! (`EXPECTATIONS.tsv`: parser outcome, wire answer, why).
#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;

/// Directory holding the RFC 4475 messages and their tables.
pub fn rfc4475_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("rfc4475")
}

/// One row of `MANIFEST.tsv`: the RFC's own classification of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// File name, e.g. `wsinv.dat`.
    pub file: String,
    /// RFC 4475 section, e.g. `3.1.1.1`.
    pub section: String,
    /// `valid`, `invalid`, `semantic` or `compat`.
    pub class: String,
    /// Section title.
    pub title: String,
}

/// What the parser must do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParserOutcome {
    /// `Message::parse` and `validate()` both succeed.
    Accept,
    /// One of them fails.
    Reject,
}

/// One row of `EXPECTATIONS.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// File name.
    pub file: String,
    /// Class, which must agree with the manifest.
    pub class: String,
    /// Accept or reject.
    pub parser_outcome: ParserOutcome,
    /// Wire answer: a status code, `drop` or `handled`.
    pub expected_response: String,
    /// Why, citing the RFC.
    pub why: String,
}

/// Rows of a TSV file: `#` comment lines and blank lines skipped, the header row dropped.
fn tsv_rows(name: &str, header_first_column: &str) -> Result<Vec<Vec<String>>, String> {
    let path = rfc4475_dir().join(name);
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split('\t').map(str::to_owned).collect::<Vec<_>>())
        .filter(|cols| cols.first().map(String::as_str) != Some(header_first_column))
        .collect())
}

/// Parse `MANIFEST.tsv`.
pub fn manifest() -> Result<Vec<ManifestEntry>, String> {
    tsv_rows("MANIFEST.tsv", "file")?
        .into_iter()
        .map(|cols| match cols.as_slice() {
            [file, section, class, title] => Ok(ManifestEntry {
                file: file.clone(),
                section: section.clone(),
                class: class.clone(),
                title: title.clone(),
            }),
            _ => Err(format!("MANIFEST.tsv: bad row {cols:?}")),
        })
        .collect()
}

/// Parse `EXPECTATIONS.tsv`.
pub fn expectations() -> Result<Vec<Expectation>, String> {
    tsv_rows("EXPECTATIONS.tsv", "file")?
        .into_iter()
        .map(|cols| match cols.as_slice() {
            [file, class, outcome, response, why] => Ok(Expectation {
                file: file.clone(),
                class: class.clone(),
                parser_outcome: match outcome.as_str() {
                    "accept" => ParserOutcome::Accept,
                    "reject" => ParserOutcome::Reject,
                    other => {
                        return Err(format!("EXPECTATIONS.tsv: {file}: bad outcome {other:?}"))
                    }
                },
                expected_response: response.clone(),
                why: why.clone(),
            }),
            _ => Err(format!("EXPECTATIONS.tsv: bad row {cols:?}")),
        })
        .collect()
}

/// Names of every `.dat` message in the corpus directory, sorted.
pub fn message_files() -> Result<Vec<String>, String> {
    let dir = rfc4475_dir();
    let mut names = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dat"))
        .collect::<Vec<_>>();
    names.sort();
    Ok(names)
}

/// The exact bytes of one message.
pub fn message_bytes(file: &str) -> Result<Vec<u8>, String> {
    let path = rfc4475_dir().join(file);
    fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
}
