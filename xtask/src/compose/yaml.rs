//! A YAML document as a tree whose every node knows its line and byte
//! offset, built from yaml-rust2's events (anchors and aliases resolved,
//! `<<` merge keys honoured on lookup, as Compose does).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(String, TScalarStyle),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    /// 1-based.
    pub line: usize,
    /// Byte offset of the node's first character in the text.
    pub offset: usize,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    /// A mapping's entries, merge keys (`<<: *anchor`) expanded after the
    /// node's own keys so those win.
    pub fn entries(&self) -> Vec<(&Node, &Node)> {
        let Value::Map(entries) = &self.value else {
            return Vec::new();
        };
        let mut out: Vec<(&Node, &Node)> = Vec::new();
        let mut merged = Vec::new();
        for (k, v) in entries {
            if k.as_str() == Some("<<") && k.style() == Some(TScalarStyle::Plain) {
                match &v.value {
                    Value::Seq(items) => merged.extend(items.iter()),
                    _ => merged.push(v),
                }
            } else {
                out.push((k, v));
            }
        }
        for m in merged {
            for (k, v) in m.entries() {
                if !out.iter().any(|(o, _)| o.as_str() == k.as_str()) {
                    out.push((k, v));
                }
            }
        }
        out
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()
            .into_iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    pub fn style(&self) -> Option<TScalarStyle> {
        match &self.value {
            Value::Scalar(_, s) => Some(*s),
            _ => None,
        }
    }
}

/// A syntax error: line and message.
#[derive(Debug)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

#[derive(Default)]
struct Builder {
    stack: Vec<(Node, usize)>,
    /// Pending key of each open mapping.
    keys: Vec<Option<Node>>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Node>,
    bad_alias: Option<usize>,
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some((parent, _)) = self.stack.last_mut() else {
            self.docs.push(node);
            return;
        };
        match &mut parent.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => {
                let slot = self.keys.last_mut().expect("a key slot per open mapping");
                match slot.take() {
                    None => *slot = Some(node),
                    Some(key) => entries.push((key, node)),
                }
            }
            Value::Scalar(..) => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = |value| Node {
            value,
            line: mark.line(),
            offset: mark.index(),
        };
        match ev {
            Event::Scalar(s, style, anchor, _) => {
                self.push_value(at(Value::Scalar(s, style)), anchor)
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push((at(Value::Seq(Vec::new())), anchor))
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push((at(Value::Map(Vec::new())), anchor));
                self.keys.push(None);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if matches!(ev, Event::MappingEnd) {
                    self.keys.pop();
                }
                if let Some((node, anchor)) = self.stack.pop() {
                    self.push_value(node, anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut node) => {
                    node.line = mark.line();
                    self.push_value(node, 0);
                }
                None => self.bad_alias = Some(mark.line()),
            },
            _ => {}
        }
    }
}

/// The first document of `text` (an empty file is an empty mapping).
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut b = Builder::default();
    Parser::new_from_str(text)
        .load(&mut b, false)
        .map_err(|e| SyntaxError {
            line: e.marker().line(),
            message: e.info().to_string(),
        })?;
    if let Some(line) = b.bad_alias {
        return Err(SyntaxError {
            line,
            message: "an alias names an anchor that is not defined before it".into(),
        });
    }
    Ok(b.docs.into_iter().next().unwrap_or(Node {
        value: Value::Map(Vec::new()),
        line: 1,
        offset: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_anchors_and_merge_keys() {
        let text = "x-common: &c\n  restart: always\n  image: base\nservices:\n  web:\n    <<: *c\n    image: nginx:1\n    ports:\n      - \"80:80\"\n";
        let doc = parse(text).unwrap();
        let web = doc.get("services").unwrap().get("web").unwrap();
        let image = web.get("image").unwrap();
        assert_eq!(image.as_str(), Some("nginx:1"));
        assert_eq!(image.line, 7);
        assert_eq!(&text[image.offset..image.offset + 7], "nginx:1");
        assert_eq!(web.get("restart").unwrap().as_str(), Some("always"));
        let port = &web.get("ports").unwrap().items()[0];
        assert_eq!(port.line, 9);
        assert_eq!(port.as_str(), Some("80:80"));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = parse("services:\n  web:\n    image: [a\n  x: 1\n").unwrap_err();
        assert!(e.line >= 3, "{e:?}");
    }

    #[test]
    fn empty_is_an_empty_map() {
        assert!(parse("").unwrap().entries().is_empty());
    }
}
