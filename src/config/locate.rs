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

    /// The deepest field whose key or value covers `offset`. When the document does not parse
    /// (a number too big for TOML, a syntax error), the path is read from the text: the table
    /// header above and the keys before `offset` on its line.
    pub(crate) fn path_at(&self, offset: usize) -> FieldPath {
        let mut segments = Vec::new();
        match &self.root {
            Some(root) => {
                deepest_at(root, offset, &mut segments);
            }
            None => segments = path_from_text(self.text, offset),
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

/// The path at `offset` read from the raw lines: the last `[table]` / `[[array]]` header
/// before it (arrays of tables counted for their index) and the `key =` chain of its line
/// (inline tables included). Best effort, for documents toml_edit cannot parse.
fn path_from_text(text: &str, offset: usize) -> Vec<Segment> {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let mut header: Vec<Segment> = Vec::new();
    let mut arrays: Vec<(String, usize)> = Vec::new();
    for line in before.get(..line_start).unwrap_or_default().lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_owned();
            match arrays.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => *count += 1,
                None => arrays.push((name.clone(), 1)),
            }
            header = header_segments(&name, &arrays);
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            header = header_segments(name.trim(), &arrays);
        }
    }
    header.extend(line_keys(before.get(line_start..).unwrap_or_default()));
    header
}

/// `a.b` as segments, with the current index after each prefix that is an array of tables.
fn header_segments(name: &str, arrays: &[(String, usize)]) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut prefix = String::new();
    for part in name.split('.') {
        let part = part.trim().trim_matches('"');
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(part);
        segments.push(Segment::Key(part.to_owned()));
        if let Some((_, count)) = arrays.iter().find(|(n, _)| *n == prefix) {
            segments.push(Segment::Index(count - 1));
        }
    }
    segments
}

/// The keys open at the end of `line`: `probe = { down_after = 9` gives probe, down_after.
fn line_keys(line: &str) -> Vec<Segment> {
    let mut open: Vec<Segment> = Vec::new();
    let mut last: Option<String> = None;
    let mut token = String::new();
    for ch in line.chars() {
        match ch {
            '=' => last = Some(std::mem::take(&mut token).trim().trim_matches('"').to_owned()),
            '{' => open.extend(last.take().map(Segment::Key)),
            '}' => {
                open.pop();
            }
            ',' => {
                last = None;
                token.clear();
            }
            _ if last.is_none() => token.push(ch),
            _ => {}
        }
    }
    let leaf = last.into_iter().flat_map(|k| k.split('.').map(str::to_owned).collect::<Vec<_>>());
    open.extend(leaf.filter(|k| !k.is_empty()).map(Segment::Key));
    open
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
        assert_eq!(map.path_at(10).to_string(), "b");
        assert!(map.path_at(0).is_root());
    }

    #[test]
    fn unparsable_document_names_the_field_from_the_text() {
        let text = "[[carrier]]\nname = \"a\"\n[[carrier]]\nname = \"b\"\n\
                    probe = { interval_ms = 10, down_after = 99999999999999999999999 }\n";
        let map = SourceMap::new(text);
        let at = text.find("9999").unwrap();
        assert_eq!(map.path_at(at).to_string(), "carrier[1].probe.down_after");
        let text = "[call]\nmax_duration_s = 99999999999999999999999\n";
        let at = text.find("9999").unwrap();
        assert_eq!(SourceMap::new(text).path_at(at).to_string(), "call.max_duration_s");
    }
}
