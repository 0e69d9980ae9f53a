//! Configuration errors: a field path (`carrier[1].probe.down_after`), the line it sits on, and
//! what is wrong with it. Every problem found is kept, not just the first.

use std::fmt;

/// One step of a [`FieldPath`]: a table key or an array index (0-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// The user-facing path of a key, as written in the TOML file (`sip.listen[0]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The document root (the empty path).
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        FieldPath(segments)
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        FieldPath(segments)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub(crate) fn from_segments(segments: Vec<Segment>) -> Self {
        FieldPath(segments)
    }

    /// This path without its last segment (`None` at the root).
    pub fn parent(&self) -> Option<Self> {
        let (_, rest) = self.0.split_last()?;
        Some(FieldPath(rest.to_vec()))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// One problem in a configuration file, ready to print:
/// `trunkguard.toml:12: carrier[1].probe.down_after: must be at least 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the text came from (usually the file path as given).
    pub origin: String,
    /// 1-based line, when the field (or its nearest enclosing table) is in the file.
    pub line: Option<usize>,
    /// The field path; empty for whole-document problems such as TOML syntax errors.
    pub field: FieldPath,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_root() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read configuration: {source}")]
    Read {
        path: String,
        #[source]
        source: super::bounds::ReadError,
    },
    /// The file was read but is invalid; one diagnostic per problem, in file order.
    #[error("{}", DiagnosticList(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The individual problems (empty for [`ConfigError::Read`]).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(diagnostics) => diagnostics,
        }
    }
}

struct DiagnosticList<'a>(&'a [Diagnostic]);

impl fmt::Display for DiagnosticList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_display() {
        let path = FieldPath::root().key("carrier").index(1).key("probe").key("down_after");
        assert_eq!(path.to_string(), "carrier[1].probe.down_after");
        assert_eq!(path.parent().unwrap().to_string(), "carrier[1].probe");
        assert_eq!(FieldPath::root().to_string(), "");
        assert!(FieldPath::root().parent().is_none());
    }

    #[test]
    fn diagnostic_display() {
        let d = Diagnostic {
            origin: "trunkguard.toml".into(),
            line: Some(12),
            field: FieldPath::root().key("call").key("max_duration_s"),
            message: "must be at least 1".into(),
        };
        assert_eq!(d.to_string(), "trunkguard.toml:12: call.max_duration_s: must be at least 1");
        let no_line = Diagnostic { line: None, field: FieldPath::root(), ..d };
        assert_eq!(no_line.to_string(), "trunkguard.toml: must be at least 1");
    }

    #[test]
    fn error_lists_every_diagnostic() {
        let d = |n| Diagnostic {
            origin: "x".into(),
            line: Some(n),
            field: FieldPath::root().key("a"),
            message: "bad".into(),
        };
        let err = ConfigError::Invalid(vec![d(1), d(2)]);
        assert_eq!(err.to_string(), "x:1: a: bad\nx:2: a: bad");
        assert_eq!(err.diagnostics().len(), 2);
    }
}
