//! Walks a parsed TOML table section by section, taking keys out as they are read so that
//! whatever is left over is an unknown key. Every error carries the `section.key` path.

use std::collections::HashMap;
use std::str::FromStr;

use toml::{Table, Value};

use crate::ConfigError;

/// A parsed document plus the raw text of `--set` values, so a string key given an
/// override such as `--set ims.domain=123` gets "123" rather than a type error.
pub(crate) struct Document {
    table: Table,
    raw_overrides: HashMap<String, String>,
}

impl Document {
    pub(crate) fn parse(text: &str) -> Result<Self, ConfigError> {
        let table = toml::from_str::<Table>(text).map_err(|e| ConfigError::Syntax {
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().trim().to_owned(),
        })?;
        Ok(Document {
            table,
            raw_overrides: HashMap::new(),
        })
    }

    /// Applies `section.key=value`. The value is TOML if it parses as one TOML value, else
    /// the literal text (so `sip:10.0.0.1:5060` needs no quotes).
    pub(crate) fn apply_override(&mut self, arg: &str) -> Result<(), ConfigError> {
        let bad = |reason: &str| ConfigError::Override {
            arg: arg.to_owned(),
            reason: reason.to_owned(),
        };
        let (path, raw) = arg
            .split_once('=')
            .ok_or_else(|| bad("expected section.key=value"))?;
        let (section, key) = path
            .trim()
            .split_once('.')
            .ok_or_else(|| bad("expected section.key=value"))?;
        if section.is_empty() || key.is_empty() || key.contains('.') {
            return Err(bad("expected section.key=value"));
        }
        let value = parse_value(raw.trim()).unwrap_or_else(|| Value::String(raw.to_owned()));
        let entry = self
            .table
            .entry(section.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(t) = entry else {
            return Err(bad(&format!("{section} is not a section")));
        };
        t.insert(key.to_owned(), value);
        self.raw_overrides
            .insert(format!("{section}.{key}"), raw.to_owned());
        Ok(())
    }

    /// Refuses sections outside `known` before any value is read, so a misspelt section is
    /// reported as such rather than as missing keys.
    pub(crate) fn check_sections(&self, known: &[&str]) -> Result<(), ConfigError> {
        for (name, value) in &self.table {
            if !known.contains(&name.as_str()) {
                return Err(match value {
                    Value::Table(_) => ConfigError::UnknownSection(name.clone()),
                    _ => ConfigError::UnknownKey(name.clone()),
                });
            }
            if !value.is_table() {
                return Err(ConfigError::invalid(
                    name.clone(),
                    format!("expected a [{name}] section"),
                ));
            }
        }
        Ok(())
    }

    /// Takes one section out; an absent section is empty (all defaults).
    pub(crate) fn section(&mut self, name: &'static str) -> Section<'_> {
        let table = match self.table.remove(name) {
            Some(Value::Table(t)) => t,
            _ => Table::new(),
        };
        Section {
            name,
            table,
            raw_overrides: &self.raw_overrides,
        }
    }
}

fn parse_value(raw: &str) -> Option<Value> {
    let mut t = toml::from_str::<Table>(&format!("v = {raw}")).ok()?;
    // A value that smuggles in a second key (`1\nx = 2`) is not one TOML value.
    if t.len() != 1 {
        return None;
    }
    t.remove("v")
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// One `[section]` being read.
pub(crate) struct Section<'a> {
    name: &'static str,
    table: Table,
    raw_overrides: &'a HashMap<String, String>,
}

impl Section<'_> {
    pub(crate) fn path(&self, key: &str) -> String {
        format!("{}.{}", self.name, key)
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    pub(crate) fn string(&mut self, key: &str, default: &str) -> Result<String, ConfigError> {
        match self.table.remove(key) {
            None => Ok(default.to_owned()),
            Some(Value::String(s)) => Ok(s),
            Some(other) => match self.raw_overrides.get(&self.path(key)) {
                Some(raw) => Ok(raw.clone()),
                None => Err(type_error(self.path(key), "a string", &other)),
            },
        }
    }

    /// An array of strings, each turned into `T` by `convert` (whose error names the
    /// problem); an override may give one comma-separated string.
    pub(crate) fn list<T>(
        &mut self,
        key: &str,
        default: Vec<T>,
        convert: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        let items: Vec<String> = match self.table.remove(key) {
            None => return Ok(default),
            Some(Value::Array(a)) => {
                let mut v = Vec::new();
                for (i, item) in a.into_iter().enumerate() {
                    match item {
                        Value::String(s) => v.push(s),
                        other => {
                            return Err(type_error(format!("{}[{i}]", self.path(key)), "a string", &other))
                        }
                    }
                }
                v
            }
            Some(Value::String(s)) => s
                .split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect(),
            Some(other) => return Err(type_error(self.path(key), "an array of strings", &other)),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                convert(s).map_err(|why| ConfigError::invalid(format!("{}[{i}]", self.path(key)), why))
            })
            .collect()
    }

    /// `true` or `false`.
    pub(crate) fn boolean(&mut self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.table.remove(key) {
            None => Ok(default),
            Some(Value::Boolean(b)) => Ok(b),
            Some(other) => Err(type_error(self.path(key), "true or false", &other)),
        }
    }

    /// An integer within `min..=max`.
    pub(crate) fn int(
        &mut self,
        key: &str,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, ConfigError> {
        match self.table.remove(key) {
            None => Ok(default),
            Some(Value::Integer(i)) if (min..=max).contains(&i) => Ok(i),
            Some(Value::Integer(i)) => Err(ConfigError::invalid(
                self.path(key),
                format!("must be between {min} and {max}, found {i}"),
            )),
            Some(other) => Err(type_error(self.path(key), "an integer", &other)),
        }
    }

    /// A string parsed with `FromStr`; `what` names the expected form in the error.
    pub(crate) fn parsed<T: FromStr>(
        &mut self,
        key: &str,
        default: T,
        what: &str,
    ) -> Result<T, ConfigError> {
        if !self.table.contains_key(key) {
            return Ok(default);
        }
        let s = self.string(key, "")?;
        s.trim()
            .parse()
            .map_err(|_| ConfigError::invalid(self.path(key), format!("invalid {what} \"{s}\"")))
    }

    /// A string; empty means `None`.
    pub(crate) fn optional<T: FromStr>(
        &mut self,
        key: &str,
        default: Option<T>,
        what: &str,
    ) -> Result<Option<T>, ConfigError> {
        if !self.table.contains_key(key) {
            return Ok(default);
        }
        let s = self.string(key, "")?;
        if s.trim().is_empty() {
            return Ok(None);
        }
        s.trim()
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::invalid(self.path(key), format!("invalid {what} \"{s}\"")))
    }

    /// One of a fixed set of words.
    pub(crate) fn choice<T: Copy + PartialEq>(
        &mut self,
        key: &str,
        default: T,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        if !self.table.contains_key(key) {
            return Ok(default);
        }
        let s = self.string(key, "")?;
        options
            .iter()
            .find(|(word, _)| word.eq_ignore_ascii_case(s.trim()))
            .map(|&(_, v)| v)
            .ok_or_else(|| {
                let words: Vec<&str> = options.iter().map(|(w, _)| *w).collect();
                ConfigError::invalid(
                    self.path(key),
                    format!("\"{s}\" is not one of {}", words.join(", ")),
                )
            })
    }

    /// Any key not taken by now is unknown.
    pub(crate) fn finish(self) -> Result<(), ConfigError> {
        match self.table.keys().next() {
            Some(key) => Err(ConfigError::UnknownKey(format!("{}.{}", self.name, key))),
            None => Ok(()),
        }
    }
}

fn type_error(path: String, expected: &str, found: &Value) -> ConfigError {
    ConfigError::invalid(
        path,
        format!("expected {expected}, found {}", found.type_str()),
    )
}
