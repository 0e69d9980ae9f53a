//! Maps between byte spans and field paths in the TOML source, so that every error can name its
//! field and line: span → path for serde errors, path → line for semantic errors.

use std::ops::Range;

use toml_edit::{ImDocument, Item, TableLike, Value};

use super::error::{FieldPath, Segment};

/// A span-annotated skeleton of the parsed document.
#[derive(Debug)]
struct Node {
    /// The key's span, for table entries.
    key_span: Option<Range<usize>>,
    /// The value's span (for `[table]`/`[[table]]` headers: the header).
    span: Option<Range<usize>>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Table(Vec<(String, Node)>),
    Array(Vec<Node>),
    Leaf,
}

/// Source text plus its span skeleton.
#[derive(Debug)]
pub(crate) struct SourceMap<'a> {
    text: &'a str,
    root: Option<Node>,
}

impl<'a> SourceMap<'a> {
    /// Builds the map; a document that does not parse yields a map that only knows lines.
    pub(crate) fn new(text: &'a str) -> Self {
        let root = ImDocument::parse(text).ok().map(|doc| node_from_item(doc.as_item(), None));
        SourceMap { text, root }
    }

    /// 1-based line of a byte offset.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        let prefix = self.text.as_bytes().get(..end).unwrap_or_default();
        prefix.iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// The deepest field whose key or value covers `offset`.
    pub(crate) fn path_at(&self, offset: usize) -> FieldPath {
        let mut segments = Vec::new();
        if let Some(root) = &self.root {
            deepest_at(root, offset, &mut segments);
        }
        FieldPath::from_segments(segments)
    }

    /// Line of the field, or of its nearest ancestor present in the file.
    pub(crate) fn line_of_path(&self, path: &FieldPath) -> Option<usize> {
        let mut current = Some(path.clone());
        while let Some(candidate) = current {
            if let Some(span) = self.span_of(&candidate) {
                return Some(self.line_of(span.start));
            }
            current = candidate.parent();
        }
        None
    }

    fn span_of(&self, path: &FieldPath) -> Option<Range<usize>> {
        if path.is_root() {
            return None;
        }
        let mut node = self.root.as_ref()?;
        for segment in path.segments() {
            node = child(node, segment)?;
        }
        node.key_span.clone().or_else(|| node.span.clone())
    }
}

fn child<'n>(node: &'n Node, segment: &Segment) -> Option<&'n Node> {
    match (&node.kind, segment) {
        (Kind::Table(entries), Segment::Key(key)) => {
            entries.iter().find(|(k, _)| k == key).map(|(_, n)| n)
        }
        (Kind::Array(items), Segment::Index(i)) => items.get(*i),
        _ => None,
    }
}

/// Pushes the path of the deepest node covering `offset`; returns whether anything matched.
fn deepest_at(node: &Node, offset: usize, segments: &mut Vec<Segment>) -> bool {
    let children: Vec<(Segment, &Node)> = match &node.kind {
        Kind::Table(entries) => entries.iter().map(|(k, n)| (Segment::Key(k.clone()), n)).collect(),
        Kind::Array(items) => {
            items.iter().enumerate().map(|(i, n)| (Segment::Index(i), n)).collect()
        }
        Kind::Leaf => Vec::new(),
    };
    for (segment, child) in children {
        segments.push(segment);
        if deepest_at(child, offset, segments) {
            return true;
        }
        segments.pop();
    }
    covers(&node.key_span, offset) || covers(&node.span, offset)
}

fn covers(span: &Option<Range<usize>>, offset: usize) -> bool {
    span.as_ref().is_some_and(|s| s.contains(&offset) || (s.is_empty() && s.start == offset))
}

fn node_from_item(item: &Item, key_span: Option<Range<usize>>) -> Node {
    let kind = if let Some(array) = item.as_array_of_tables() {
        Kind::Array(
            array
                .iter()
                .map(|table| Node { key_span: None, span: table.span(), kind: table_kind(table) })
                .collect(),
        )
    } else if let Some(table) = item.as_table_like() {
        table_kind(table)
    } else if let Some(array) = item.as_array() {
        Kind::Array(array.iter().map(|v| node_from_value(v, None)).collect())
    } else {
        Kind::Leaf
    };
    Node { key_span, span: item.span(), kind }
}

fn node_from_value(value: &Value, key_span: Option<Range<usize>>) -> Node {
    let kind = match value {
        Value::InlineTable(table) => table_kind(table),
        Value::Array(array) => {
            Kind::Array(array.iter().map(|v| node_from_value(v, None)).collect())
        }
        _ => Kind::Leaf,
    };
    Node { key_span, span: value.span(), kind }
}

fn table_kind(table: &dyn TableLike) -> Kind {
    let entries = table
        .iter()
        .filter_map(|(name, _)| table.get_key_value(name))
        .map(|(key, item)| (key.get().to_owned(), node_from_item(item, key.span())))
        .collect();
    Kind::Table(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
[sip]
listen = [\"udp:1.2.3.4:5060\",
  \"tcp:1.2.3.4:5060\"]

[[carrier]]
name = \"a\"

[[carrier]]
name = \"b\"
probe = { interval_ms = 10, down_after = 0 }
";

    fn path(p: &[Segment]) -> FieldPath {
        FieldPath::from_segments(p.to_vec())
    }

    fn key(k: &str) -> Segment {
        Segment::Key(k.into())
    }

    #[test]
    fn line_of_path_finds_keys_in_tables_arrays_and_inline_tables() {
        let map = SourceMap::new(DOC);
        let listen1 = path(&[key("sip"), key("listen"), Segment::Index(1)]);
        assert_eq!(map.line_of_path(&listen1), Some(3));
        let down = path(&[key("carrier"), Segment::Index(1), key("probe"), key("down_after")]);
        assert_eq!(map.line_of_path(&down), Some(10));
        let carrier1 = path(&[key("carrier"), Segment::Index(1)]);
        assert_eq!(map.line_of_path(&carrier1), Some(8));
    }

    #[test]
    fn missing_field_falls_back_to_enclosing_table() {
        let map = SourceMap::new(DOC);
        let missing = path(&[key("carrier"), Segment::Index(0), key("proxy")]);
        assert_eq!(map.line_of_path(&missing), Some(5));
        assert_eq!(map.line_of_path(&path(&[key("status")])), None);
    }

    #[test]
    fn path_at_offset() {
        let map = SourceMap::new(DOC);
        let offset = DOC.find("down_after").unwrap();
        assert_eq!(map.path_at(offset).to_string(), "carrier[1].probe.down_after");
        let offset = DOC.find("\"tcp:").unwrap();
        assert_eq!(map.path_at(offset).to_string(), "sip.listen[1]");
        assert_eq!(map.line_of(offset), 3);
    }

    #[test]
    fn unparsable_document_still_knows_lines() {
        let map = SourceMap::new("a = 1\nb = = 2\n");
        assert_eq!(map.line_of(8), 2);
        assert!(map.path_at(8).is_root());
    }
}
