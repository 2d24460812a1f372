//! Configuration errors. Each names the key path (or the line, for syntax errors) so an
//! operator can fix the file without reading code.

use std::path::PathBuf;

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file named on the command line.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// The text is not TOML.
    #[error("line {line}: TOML syntax error: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// The parser's description.
        message: String,
    },
    /// A `[section]` the gateway does not know (often a typo).
    #[error("unknown section [{0}]")]
    UnknownSection(String),
    /// A `section.key` the gateway does not know (often a typo).
    #[error("unknown key {0}")]
    UnknownKey(String),
    /// A known key with a value of the wrong type or out of range.
    #[error("{key}: {reason}")]
    Invalid {
        /// `section.key`.
        key: String,
        /// What is wrong, with the offending value.
        reason: String,
    },
    /// A `--set` argument that is not `section.key=value`.
    #[error("--set {arg}: {reason}")]
    Override {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    /// The key path the error is about, when it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey(k) | ConfigError::Invalid { key: k, .. } => Some(k),
            _ => None,
        }
    }

    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
