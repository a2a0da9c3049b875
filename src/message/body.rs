//! The body codec: bytes → `body`, `body_encoding`, `body_text`, and back.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BodyEncoding {
    Json,
    Text,
    Base64,
}

impl BodyEncoding {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BodyEncoding::Json => "json",
            BodyEncoding::Text => "text",
            BodyEncoding::Base64 => "base64",
        }
    }
}

/// A message body: its exact bytes and the contract's rendering of them (`body`,
/// `body_encoding`, `body_text` when the compact rendering would not give back the exact bytes,
/// `body_size`), serialised as those four keys of the message object.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct Body {
    #[serde(rename = "body")]
    pub value: Value,
    #[serde(rename = "body_encoding")]
    pub encoding: BodyEncoding,
    #[serde(rename = "body_text", skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(rename = "body_size")]
    pub size: usize,
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

impl Body {
    pub(crate) fn new(bytes: &[u8]) -> Body {
        let (value, encoding, text) = encode(bytes);
        Body {
            value,
            encoding,
            text,
            size: bytes.len(),
            bytes: bytes.to_vec(),
        }
    }
}

fn encode(body: &[u8]) -> (Value, BodyEncoding, Option<String>) {
    let Ok(text) = std::str::from_utf8(body) else {
        return (
            Value::String(BASE64.encode(body)),
            BodyEncoding::Base64,
            None,
        );
    };
    // serde_json rejects the empty string, so an empty body falls through to text, "".
    if let Ok(parsed) = serde_json::from_str::<Value>(text) {
        // Anything serde_json normalises (whitespace, duplicate keys, escapes, 1.0 vs 1, big
        // integers turned into floats) shows up as a byte difference here.
        let exact = serde_json::to_vec(&parsed).is_ok_and(|compact| compact == body);
        return (
            parsed,
            BodyEncoding::Json,
            (!exact).then(|| text.to_owned()),
        );
    }
    (Value::from(text), BodyEncoding::Text, None)
}

/// The exact body bytes of a contract object. `body_text` wins over `body` because it is the
/// only field that is guaranteed to hold the original bytes of a json body.
pub(crate) fn decode_body(record: &Map<String, Value>) -> Result<Vec<u8>, String> {
    match record.get("body_text") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => return Ok(s.as_bytes().to_vec()),
        Some(_) => return Err("field body_text must be a string".into()),
    }
    let body = record.get("body").ok_or("field body is missing")?;
    let encoding = match record.get("body_encoding") {
        Some(Value::String(e)) => e.as_str(),
        // A hand-written record without an encoding: a string is meant as text, anything else as JSON.
        None | Some(Value::Null) if body.is_string() => "text",
        None | Some(Value::Null) => "json",
        Some(_) => return Err("field body_encoding must be a string".into()),
    };
    match encoding {
        "json" => serde_json::to_vec(body)
            .map_err(|e| format!("field body cannot be written as JSON: {e}")),
        "text" => body
            .as_str()
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| "field body must be a string when body_encoding is text".into()),
        "base64" => {
            let s = body
                .as_str()
                .ok_or("field body must be a string when body_encoding is base64")?;
            BASE64
                .decode(s)
                .map_err(|e| format!("field body is not valid base64: {e}"))
        }
        other => Err(format!(
            "field body_encoding must be json, text or base64, not {other:?}"
        )),
    }
}

#[cfg(test)]
mod tests {

    use crate::message::testing::*;
    use crate::message::*;
    use lapin::BasicProperties;
    use serde_json::Value;

    use serde_json::json;

    #[test]
    fn body_encodings() {
        let cases: Vec<(&[u8], Value, &str, Option<&str>)> = vec![
            (br#"{"a":1}"#, json!({"a": 1}), "json", None),
            (
                b"{ \"a\": 1 }\n",
                json!({"a": 1}),
                "json",
                Some("{ \"a\": 1 }\n"),
            ),
            (br#"{"b":1,"a":2}"#, json!({"b": 1, "a": 2}), "json", None),
            (
                br#"{"a":1,"a":2}"#,
                json!({"a": 2}),
                "json",
                Some(r#"{"a":1,"a":2}"#),
            ),
            (br#""\u0041""#, json!("A"), "json", Some(r#""\u0041""#)),
            (b"1.0", json!(1.0), "json", None),
            (b"1e2", json!(100.0), "json", Some("1e2")),
            (
                b"123456789012345678901234567890",
                json!(1.2345678901234568e29),
                "json",
                Some("123456789012345678901234567890"),
            ),
            (b"42", json!(42), "json", None),
            (b"hello world", json!("hello world"), "text", None),
            (b"", json!(""), "text", None),
            ("héllo".as_bytes(), json!("héllo"), "text", None),
            (b"\xff\xfe\x00", json!("//4A"), "base64", None),
            (b"{\"a\":\"\xff\"}", json!("eyJhIjoi/yJ9"), "base64", None),
        ];
        let props = BasicProperties::default();
        for (body, value, encoding, text) in cases {
            let got = to_json(&view(&props, body));
            assert_eq!(got["body"], value, "{body:?}");
            assert_eq!(got["body_encoding"], json!(encoding), "{body:?}");
            assert_eq!(
                got.get("body_text").and_then(Value::as_str),
                text,
                "{body:?}"
            );
            assert_eq!(got["body_size"], json!(body.len()));
        }
    }

    #[test]
    fn parsed_json_bodies_keep_key_order() {
        let props = BasicProperties::default();
        let got = to_json(&view(&props, br#"{"z":1,"a":{"y":2,"b":3}}"#));
        assert_eq!(
            serde_json::to_string(&got["body"]).ok().as_deref(),
            Some(r#"{"z":1,"a":{"y":2,"b":3}}"#)
        );
        assert!(got.get("body_text").is_none());
    }

    #[test]
    fn body_text_sits_between_encoding_and_size() {
        let props = BasicProperties::default();
        let got = to_json(&view(&props, b"[1, 2]"));
        let keys: Vec<&String> = got
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            keys[8..],
            ["body", "body_encoding", "body_text", "body_size"]
        );
    }
}
