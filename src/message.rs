//! Owns the contract's JSON shape of a message (CONTRACT.md section 5): AMQP message → JSON and, for `import`, JSON → publishable record.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use lapin::types::{AMQPValue, FieldArray, FieldTable, ShortString};
use lapin::BasicProperties;
use serde_json::{Map, Number, Value};

/// One delivered message, borrowed from wherever the caller got it (basic_get, a consumer...).
pub struct MessageView<'a> {
    pub position: u64,
    pub queue: &'a str,
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub redelivered: bool,
    pub properties: &'a BasicProperties,
    pub body: &'a [u8],
}

impl<'a> MessageView<'a> {
    /// A delivery read from `queue` at 1-based `position`.
    pub fn from_delivery(queue: &'a str, position: u64, d: &'a lapin::message::Delivery) -> Self {
        MessageView {
            position,
            queue,
            exchange: d.exchange.as_str(),
            routing_key: d.routing_key.as_str(),
            redelivered: d.redelivered,
            properties: &d.properties,
            body: &d.data,
        }
    }
}

/// The contract object, keys in the contract's order.
pub fn to_json(m: &MessageView) -> Value {
    let headers = m.properties.headers().as_ref();
    let mut o = Map::new();
    o.insert("position".into(), Value::from(m.position));
    o.insert("queue".into(), Value::from(m.queue));
    o.insert("exchange".into(), Value::from(m.exchange));
    o.insert("routing_key".into(), Value::from(m.routing_key));
    o.insert("redelivered".into(), Value::Bool(m.redelivered));
    o.insert("properties".into(), properties_to_json(m.properties));
    o.insert(
        "headers".into(),
        headers.map_or_else(|| Value::Object(Map::new()), field_table_to_json),
    );
    o.insert("failure".into(), failure(headers).to_json());
    let body = encode_body(m.body);
    o.insert("body".into(), body.value);
    o.insert("body_encoding".into(), Value::from(body.encoding.as_str()));
    if let Some(text) = body.text {
        o.insert("body_text".into(), Value::String(text));
    }
    o.insert("body_size".into(), Value::from(m.body.len()));
    Value::Object(o)
}

// ---------------------------------------------------------------------------------------------
// Header values

pub fn amqp_value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        // Going through the shortest decimal text keeps 0.1f32 as 0.1 instead of
        // 0.10000000149011612, which is what the sender meant.
        AMQPValue::Float(f) => float_to_json(f.to_string().parse().unwrap_or(f64::NAN)),
        AMQPValue::Double(f) => float_to_json(*f),
        AMQPValue::DecimalValue(d) => decimal_to_json(d.value, d.scale),
        AMQPValue::ShortString(s) => short_to_json(s),
        AMQPValue::LongString(s) => bytes_to_json(s.as_bytes()),
        AMQPValue::FieldArray(a) => {
            Value::Array(a.as_slice().iter().map(amqp_value_to_json).collect())
        }
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(t) => field_table_to_json(t),
        AMQPValue::ByteArray(b) => Value::String(BASE64.encode(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

pub fn field_table_to_json(t: &FieldTable) -> Value {
    Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (short_to_text(k), amqp_value_to_json(v)))
            .collect(),
    )
}

/// A short string as JSON: its text, or base64 of its bytes when they are not UTF-8 (contract
/// section 5; the patched amq-protocol-types keeps such bytes, see patches/README.md).
pub fn short_to_json(s: &ShortString) -> Value {
    Value::String(short_to_text(s))
}

fn short_to_text(s: &ShortString) -> String {
    if s.has_raw_bytes() {
        BASE64.encode(s.wire_bytes())
    } else {
        s.as_str().to_owned()
    }
}

fn float_to_json(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn bytes_to_json(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::from(s),
        Err(_) => Value::String(BASE64.encode(b)),
    }
}

fn decimal_to_json(value: u32, scale: u8) -> Value {
    if scale == 0 {
        return Value::from(value);
    }
    // Parsing the exact decimal text rounds once, where value / 10^scale in f64 could round twice.
    let digits = format!("{value:0>width$}", width = usize::from(scale) + 1);
    let (int, frac) = digits.split_at(digits.len() - usize::from(scale));
    float_to_json(format!("{int}.{frac}").parse().unwrap_or(f64::NAN))
}

// ---------------------------------------------------------------------------------------------
// Properties

/// Only the properties that are set, in AMQP order; the headers table lives elsewhere.
pub fn properties_to_json(p: &BasicProperties) -> Value {
    fn text(o: &mut Map<String, Value>, key: &str, v: &Option<ShortString>) {
        if let Some(s) = v {
            o.insert(key.into(), short_to_json(s));
        }
    }
    let mut o = Map::new();
    text(&mut o, "content_type", p.content_type());
    text(&mut o, "content_encoding", p.content_encoding());
    if let Some(n) = p.delivery_mode() {
        o.insert("delivery_mode".into(), Value::from(*n));
    }
    if let Some(n) = p.priority() {
        o.insert("priority".into(), Value::from(*n));
    }
    text(&mut o, "correlation_id", p.correlation_id());
    text(&mut o, "reply_to", p.reply_to());
    text(&mut o, "expiration", p.expiration());
    text(&mut o, "message_id", p.message_id());
    if let Some(t) = p.timestamp() {
        o.insert("timestamp".into(), Value::from(*t));
    }
    text(&mut o, "type", p.kind());
    text(&mut o, "user_id", p.user_id());
    text(&mut o, "app_id", p.app_id());
    text(&mut o, "cluster_id", p.cluster_id());
    Value::Object(o)
}

// ---------------------------------------------------------------------------------------------
// Body

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Json,
    Text,
    Base64,
}

impl BodyEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyEncoding::Json => "json",
            BodyEncoding::Text => "text",
            BodyEncoding::Base64 => "base64",
        }
    }
}

/// `body`, `body_encoding` and, when the compact rendering would not give back the exact bytes, `body_text`.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedBody {
    pub value: Value,
    pub encoding: BodyEncoding,
    pub text: Option<String>,
}

pub fn encode_body(body: &[u8]) -> EncodedBody {
    let Ok(text) = std::str::from_utf8(body) else {
        return EncodedBody {
            value: Value::String(BASE64.encode(body)),
            encoding: BodyEncoding::Base64,
            text: None,
        };
    };
    // serde_json rejects the empty string, so an empty body falls through to text, "".
    if let Ok(parsed) = serde_json::from_str::<Value>(text) {
        // Anything serde_json normalises (whitespace, duplicate keys, escapes, 1.0 vs 1, big
        // integers turned into floats) shows up as a byte difference here.
        let exact = serde_json::to_vec(&parsed).is_ok_and(|compact| compact == body);
        return EncodedBody {
            value: parsed,
            encoding: BodyEncoding::Json,
            text: (!exact).then(|| text.to_owned()),
        };
    }
    EncodedBody {
        value: Value::from(text),
        encoding: BodyEncoding::Text,
        text: None,
    }
}

/// The exact body bytes of a contract object. `body_text` wins over `body` because it is the
/// only field that is guaranteed to hold the original bytes of a json body.
pub fn decode_body(record: &Map<String, Value>) -> Result<Vec<u8>, String> {
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

// ---------------------------------------------------------------------------------------------
// x-death

/// One entry of the broker's `x-death` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XDeath {
    pub queue: String,
    pub reason: String,
    pub count: i64,
    pub exchange: String,
    pub routing_keys: Vec<String>,
    pub time: Option<i64>,
}

/// Entries in the broker's order (newest first). Entries that are not tables are skipped and
/// missing fields are empty, because a republished or hand-made x-death can be anything.
pub fn x_death(headers: Option<&FieldTable>) -> Vec<XDeath> {
    let Some(AMQPValue::FieldArray(entries)) = headers.and_then(|h| h.inner().get("x-death"))
    else {
        return Vec::new();
    };
    entries
        .as_slice()
        .iter()
        .filter_map(|e| match e {
            AMQPValue::FieldTable(t) => Some(t),
            _ => None,
        })
        .map(|t| {
            let text = |k: &str| {
                t.inner()
                    .get(k)
                    .and_then(value_str)
                    .unwrap_or("")
                    .to_owned()
            };
            XDeath {
                queue: text("queue"),
                reason: text("reason"),
                count: t.inner().get("count").and_then(value_int).unwrap_or(0),
                exchange: text("exchange"),
                routing_keys: match t.inner().get("routing-keys") {
                    Some(AMQPValue::FieldArray(keys)) => keys
                        .as_slice()
                        .iter()
                        .filter_map(value_str)
                        .map(str::to_owned)
                        .collect(),
                    _ => Vec::new(),
                },
                time: t.inner().get("time").and_then(value_time),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// failure

/// Why and where a message failed, as far as its headers tell.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Failure {
    pub origin: Option<String>,
    pub reason: Option<String>,
    pub attempts: Option<i64>,
    pub message: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub at: Option<i64>,
}

impl Failure {
    /// Same as the Serialize form, without a fallible detour through serde.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("origin".into(), self.origin.clone().into());
        o.insert("reason".into(), self.reason.clone().into());
        o.insert("attempts".into(), self.attempts.into());
        o.insert("message".into(), self.message.clone().into());
        o.insert("type".into(), self.kind.clone().into());
        o.insert("at".into(), self.at.into());
        Value::Object(o)
    }
}

/// Each field comes from the first source that has it, in the contract's order: our own
/// `x-error-*` headers, Sneakers' `retry_info`, MassTransit's `MT-Fault-*`, then the broker's
/// dead-lettering headers.
///
/// Empty strings count as absent everywhere (the worker writes `x-error-type: ""` when it knows
/// no type), so a later source can still fill the field and group-by never sees `""` next to null.
pub fn failure(headers: Option<&FieldTable>) -> Failure {
    let mut f = Failure::default();
    let Some(h) = headers else {
        return f;
    };
    from_contract_headers(h, &mut f);
    from_sneakers(h, &mut f);
    from_masstransit(h, &mut f);
    from_dead_lettering(h, &mut f);
    f
}

fn fill<T>(slot: &mut Option<T>, candidate: impl FnOnce() -> Option<T>) {
    if slot.is_none() {
        *slot = candidate();
    }
}

fn get<'t>(h: &'t FieldTable, key: &str) -> Option<&'t AMQPValue> {
    h.inner().get(key)
}

fn get_text(h: &FieldTable, key: &str) -> Option<String> {
    get(h, key).and_then(value_str).and_then(non_empty)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn from_contract_headers(h: &FieldTable, f: &mut Failure) {
    fill(&mut f.message, || get_text(h, "x-error-message"));
    fill(&mut f.kind, || get_text(h, "x-error-type"));
    fill(&mut f.attempts, || get(h, "x-attempts").and_then(value_int));
    fill(&mut f.at, || get(h, "x-failed-at").and_then(value_time));
}

fn from_sneakers(h: &FieldTable, f: &mut Failure) {
    let Some(raw) = get(h, "retry_info").and_then(value_str) else {
        return;
    };
    let Ok(parsed) = serde_json::from_str::<Value>(raw) else {
        return;
    };
    let newest = match &parsed {
        Value::Array(items) => items.first(),
        other => Some(other),
    };
    let Some(Value::Object(info)) = newest else {
        return;
    };
    let text = |k: &str| info.get(k).and_then(Value::as_str).and_then(non_empty);
    fill(&mut f.message, || {
        text("error_message").or_else(|| text("error"))
    });
    fill(&mut f.kind, || text("error_class"));
    fill(&mut f.attempts, || {
        info.get("num_attempts").and_then(json_int)
    });
    fill(&mut f.at, || match info.get("failed_at")? {
        Value::String(s) => parse_timestamp(s),
        other => json_int(other),
    });
}

fn from_masstransit(h: &FieldTable, f: &mut Failure) {
    fill(&mut f.message, || get_text(h, "MT-Fault-Message"));
    fill(&mut f.kind, || get_text(h, "MT-Fault-ExceptionType"));
    fill(&mut f.at, || {
        get(h, "MT-Fault-Timestamp").and_then(value_time)
    });
    // RetryCount counts retries, so the failed delivery that parked the message is one more.
    fill(&mut f.attempts, || {
        get(h, "MT-Fault-RetryCount")
            .and_then(value_int)
            .and_then(|n| n.checked_add(1))
    });
    fill(&mut f.reason, || get_text(h, "MT-Reason"));
}

fn from_dead_lettering(h: &FieldTable, f: &mut Failure) {
    let deaths = x_death(Some(h));
    let origin = get_text(h, "x-first-death-queue")
        .or_else(|| deaths.last().and_then(|d| non_empty(&d.queue)))
        .or_else(|| published_to_queue(h));
    let entry = origin.as_deref().and_then(|o| {
        deaths
            .iter()
            .find(|d| d.queue == o && d.reason == "rejected")
    });
    if let Some(e) = entry {
        fill(&mut f.attempts, || e.count.checked_add(1));
        fill(&mut f.at, || e.time);
        fill(&mut f.reason, || non_empty(&e.reason));
    }
    fill(&mut f.reason, || get_text(h, "x-first-death-reason"));
    fill(&mut f.reason, || {
        deaths.last().and_then(|d| non_empty(&d.reason))
    });
    fill(&mut f.origin, || origin);
}

/// A message that failed on its first delivery carries no x-death, but the worker recorded
/// where it was delivered from. Only a publish through the default exchange names a queue
/// in its routing key; with any other exchange the key is a topic, not a queue.
fn published_to_queue(h: &FieldTable) -> Option<String> {
    let exchange = get(h, "x-original-exchange").and_then(value_str)?;
    if !exchange.is_empty() {
        return None;
    }
    get_text(h, "x-original-routing-key")
}

pub fn value_str(v: &AMQPValue) -> Option<&str> {
    match v {
        AMQPValue::ShortString(s) => Some(s.as_str()),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        _ => None,
    }
}

/// Any integer-valued header; clients disagree about widths, and some send counts as text.
pub fn value_int(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        AMQPValue::Double(x) => float_int(*x),
        AMQPValue::Float(x) => float_int(f64::from(*x)),
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => value_str(v)?.trim().parse().ok(),
        _ => None,
    }
}

/// Seconds since the epoch from a timestamp, an integer or a date string.
fn value_time(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => {
            let s = value_str(v)?;
            parse_timestamp(s).or_else(|| s.trim().parse().ok())
        }
        other => value_int(other),
    }
}

fn json_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(float_int)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn float_int(x: f64) -> Option<i64> {
    // `i64::MAX as f64` rounds up to exactly 2^63, so every value below it converts exactly.
    (x.is_finite() && x.fract() == 0.0 && x.abs() < i64::MAX as f64).then_some(x as i64)
}

// ---------------------------------------------------------------------------------------------
// Dates

/// Seconds since the Unix epoch of an RFC 3339 time (`2024-01-01T10:00:00Z`, `…+01:00`), or of
/// Ruby's `Time#to_s` (`2024-01-01 10:00:00 +0100`, `… UTC`): one space before the zone, and UTC
/// by name. The fraction is dropped: `at` is whole seconds. A time without a zone is ambiguous,
/// so it is rejected rather than guessed.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let rfc3339 = match s.strip_suffix(" UTC") {
        Some(time) => format!("{time}Z"),
        // The zone starts after the seconds (19 bytes in), with or without one space before it.
        None => match s.get(19..).and_then(|rest| rest.find(' ')) {
            Some(i) => format!("{}{}", &s[..19 + i], &s[19 + i + 1..]),
            None => s.to_owned(),
        },
    };
    // jiff reads a zone name in brackets after the offset; a message's timestamp has none.
    if rfc3339.contains('[') {
        return None;
    }
    rfc3339
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

// ---------------------------------------------------------------------------------------------
// JSON → AMQP (import)

/// A record read back from JSON (for `dlq import`): exact body bytes, properties (headers
/// included), original exchange/routing key.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub exchange: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

/// The inverse of [`to_json`] as far as publishing needs. Err is one sentence naming the bad field.
pub fn record_from_json(v: &Value) -> Result<Record, String> {
    let Value::Object(o) = v else {
        return Err("the record is not a JSON object".into());
    };
    let text = |key: &str| match o.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("field {key} must be a string")),
    };
    let exchange = text("exchange")?;
    let routing_key = text("routing_key")?;
    let mut properties = match o.get("properties") {
        None | Some(Value::Null) => BasicProperties::default(),
        Some(p) => properties_from_json(p)?,
    };
    match o.get("headers") {
        None | Some(Value::Null) => {}
        Some(h) => {
            let table = headers_from_json(h)?;
            // `{}` is how both "no headers" and "empty headers" are written; publish neither.
            if !table.inner().is_empty() {
                properties = properties.with_headers(table);
            }
        }
    }
    let body = decode_body(o)?;
    Ok(Record {
        exchange,
        routing_key,
        properties,
        body,
    })
}

/// The `properties` object of the contract (headers excluded). Unknown names are refused, so
/// a typo does not silently drop a property on import.
pub fn properties_from_json(v: &Value) -> Result<BasicProperties, String> {
    let Value::Object(o) = v else {
        return Err("field properties must be an object".into());
    };
    let mut p = BasicProperties::default();
    for (key, value) in o {
        if value.is_null() {
            continue;
        }
        let field = format!("properties.{key}");
        let short = || short_string(value, &field);
        let octet = || {
            value
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| format!("field {field} must be an integer from 0 to 255"))
        };
        p = match key.as_str() {
            "content_type" => p.with_content_type(short()?),
            "content_encoding" => p.with_content_encoding(short()?),
            "delivery_mode" => p.with_delivery_mode(octet()?),
            "priority" => p.with_priority(octet()?),
            "correlation_id" => p.with_correlation_id(short()?),
            "reply_to" => p.with_reply_to(short()?),
            "expiration" => p.with_expiration(short()?),
            "message_id" => p.with_message_id(short()?),
            "timestamp" => p.with_timestamp(
                value
                    .as_u64()
                    .ok_or_else(|| format!("field {field} must be a non-negative integer"))?,
            ),
            "type" => p.with_type(short()?),
            "user_id" => p.with_user_id(short()?),
            "app_id" => p.with_app_id(short()?),
            "cluster_id" => p.with_cluster_id(short()?),
            _ => return Err(format!("field {field} is not an AMQP message property")),
        };
    }
    Ok(p)
}

fn short_string(v: &Value, field: &str) -> Result<ShortString, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("field {field} must be a string"))?;
    ShortString::try_new(s).map_err(|_| format!("field {field} is longer than 255 bytes"))
}

/// The `headers` object of the contract. The broker's own timestamp fields (`x-failed-at`, the
/// `time` of each `x-death` entry) go back as AMQP timestamps, not integers, so a re-imported
/// message reads the same as the original.
pub fn headers_from_json(v: &Value) -> Result<FieldTable, String> {
    let Value::Object(o) = v else {
        return Err("field headers must be an object".into());
    };
    let mut table = FieldTable::default();
    for (key, value) in o {
        let field = format!("headers.{key}");
        let amqp = match (key.as_str(), value) {
            ("x-failed-at", Value::Number(n)) if n.is_u64() => json_to_timestamp(value, &field)?,
            ("x-death", Value::Array(entries)) => x_death_from_json(entries, &field)?,
            _ => json_to_amqp(value, &field)?,
        };
        table.insert(field_name(key, &field)?, amqp);
    }
    Ok(table)
}

fn x_death_from_json(entries: &[Value], field: &str) -> Result<AMQPValue, String> {
    let mut out = FieldArray::default();
    for (i, entry) in entries.iter().enumerate() {
        let entry_field = format!("{field}[{i}]");
        let Value::Object(o) = entry else {
            out.push(json_to_amqp(entry, &entry_field)?);
            continue;
        };
        let mut table = FieldTable::default();
        for (key, value) in o {
            let f = format!("{entry_field}.{key}");
            let amqp = match (key.as_str(), value) {
                ("time", Value::Number(n)) if n.is_u64() => json_to_timestamp(value, &f)?,
                _ => json_to_amqp(value, &f)?,
            };
            table.insert(field_name(key, &f)?, amqp);
        }
        out.push(AMQPValue::FieldTable(table));
    }
    Ok(AMQPValue::FieldArray(out))
}

fn json_to_timestamp(v: &Value, field: &str) -> Result<AMQPValue, String> {
    v.as_u64()
        .map(AMQPValue::Timestamp)
        .ok_or_else(|| format!("field {field} must be a non-negative integer"))
}

fn field_name(key: &str, field: &str) -> Result<ShortString, String> {
    ShortString::try_new(key).map_err(|_| format!("field {field} has a name longer than 255 bytes"))
}

/// string → long string, integer → long-long, other number → double, bool, null → void,
/// array → field array, object → field table.
pub fn json_to_amqp(v: &Value, field: &str) -> Result<AMQPValue, String> {
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                AMQPValue::LongLongInt(i)
            } else if n.is_u64() {
                return Err(format!(
                    "field {field} is an integer too large for an AMQP header"
                ));
            } else {
                match n.as_f64() {
                    Some(f) => AMQPValue::Double(f),
                    None => return Err(format!("field {field} is not a usable number")),
                }
            }
        }
        Value::String(s) => AMQPValue::LongString(s.as_str().into()),
        Value::Array(items) => {
            let mut out = FieldArray::default();
            for (i, item) in items.iter().enumerate() {
                out.push(json_to_amqp(item, &format!("{field}[{i}]"))?);
            }
            AMQPValue::FieldArray(out)
        }
        Value::Object(o) => {
            let mut table = FieldTable::default();
            for (key, value) in o {
                let f = format!("{field}.{key}");
                table.insert(field_name(key, &f)?, json_to_amqp(value, &f)?);
            }
            AMQPValue::FieldTable(table)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{ByteArray, DecimalValue, LongString};
    use serde_json::json;

    fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert(k.into(), v);
        }
        t
    }

    fn long(s: &str) -> AMQPValue {
        AMQPValue::LongString(s.into())
    }

    /// An x-death entry laid out the way RabbitMQ writes it.
    fn death(queue: &str, reason: &str, count: i64, time: u64, key: &str) -> AMQPValue {
        AMQPValue::FieldTable(table(vec![
            ("count", AMQPValue::LongLongInt(count)),
            ("exchange", long("")),
            ("queue", long(queue)),
            ("reason", long(reason)),
            (
                "routing-keys",
                AMQPValue::FieldArray(vec![long(key)].into()),
            ),
            ("time", AMQPValue::Timestamp(time)),
        ]))
    }

    fn deaths(entries: Vec<AMQPValue>) -> (&'static str, AMQPValue) {
        ("x-death", AMQPValue::FieldArray(entries.into()))
    }

    fn view<'a>(props: &'a BasicProperties, body: &'a [u8]) -> MessageView<'a> {
        MessageView {
            position: 1,
            queue: "billing.error",
            exchange: "",
            routing_key: "billing.error",
            redelivered: false,
            properties: props,
            body,
        }
    }

    #[test]
    fn every_amqp_value_variant_maps_to_json() {
        let cases = vec![
            (AMQPValue::Boolean(true), json!(true)),
            (AMQPValue::ShortShortInt(-8), json!(-8)),
            (AMQPValue::ShortShortUInt(200), json!(200)),
            (AMQPValue::ShortInt(-300), json!(-300)),
            (AMQPValue::ShortUInt(60_000), json!(60_000)),
            (AMQPValue::LongInt(-70_000), json!(-70_000)),
            (AMQPValue::LongUInt(4_000_000_000), json!(4_000_000_000u32)),
            (AMQPValue::LongLongInt(i64::MIN), json!(i64::MIN)),
            (AMQPValue::Float(0.1), json!(0.1)),
            (AMQPValue::Float(f32::NAN), Value::Null),
            (AMQPValue::Double(2.5), json!(2.5)),
            (AMQPValue::Double(f64::INFINITY), Value::Null),
            (AMQPValue::Double(f64::NEG_INFINITY), Value::Null),
            (
                AMQPValue::DecimalValue(DecimalValue {
                    scale: 2,
                    value: 12_345,
                }),
                json!(123.45),
            ),
            (
                AMQPValue::DecimalValue(DecimalValue { scale: 3, value: 5 }),
                json!(0.005),
            ),
            (
                AMQPValue::DecimalValue(DecimalValue { scale: 0, value: 7 }),
                json!(7),
            ),
            (AMQPValue::ShortString("short".into()), json!("short")),
            (long("long ✓"), json!("long ✓")),
            (
                AMQPValue::LongString(LongString::from(vec![0xff, 0x00, 0xfe])),
                json!("/wD+"),
            ),
            (
                AMQPValue::FieldArray(vec![AMQPValue::Void, AMQPValue::LongInt(1)].into()),
                json!([null, 1]),
            ),
            (AMQPValue::Timestamp(1_763_800_000), json!(1_763_800_000)),
            (
                AMQPValue::FieldTable(table(vec![
                    ("b", long("x")),
                    ("a", AMQPValue::Boolean(false)),
                ])),
                json!({"a": false, "b": "x"}),
            ),
            (
                AMQPValue::ByteArray(ByteArray::from(b"hi\x00".to_vec())),
                json!("aGkA"),
            ),
            (AMQPValue::Void, Value::Null),
        ];
        for (amqp, expected) in cases {
            assert_eq!(amqp_value_to_json(&amqp), expected, "{amqp:?}");
        }
    }

    #[test]
    fn contract_example_object() {
        let headers = table(vec![
            ("x-error-message", long("timeout")),
            ("x-attempts", AMQPValue::LongLongInt(6)),
            deaths(vec![death(
                "billing",
                "rejected",
                5,
                1_763_800_000,
                "billing.retry",
            )]),
        ]);
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id("m-1".into())
            .with_timestamp(1_763_800_000)
            .with_delivery_mode(2)
            .with_headers(headers);
        let body = br#"{"tenant":"acme"}"#;
        let got = to_json(&view(&props, body));
        let expected = json!({
            "position": 1,
            "queue": "billing.error",
            "exchange": "",
            "routing_key": "billing.error",
            "redelivered": false,
            "properties": { "content_type": "application/json", "delivery_mode": 2,
                            "message_id": "m-1", "timestamp": 1_763_800_000 },
            "headers": { "x-attempts": 6, "x-death": [ { "count": 5, "exchange": "", "queue": "billing",
                         "reason": "rejected", "routing-keys": ["billing.retry"], "time": 1_763_800_000 } ],
                         "x-error-message": "timeout" },
            "failure": { "origin": "billing", "reason": "rejected", "attempts": 6,
                         "message": "timeout", "type": null, "at": 1_763_800_000 },
            "body": { "tenant": "acme" },
            "body_encoding": "json",
            "body_size": 17
        });
        assert_eq!(got, expected);
        let keys: Vec<&String> = got
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            [
                "position",
                "queue",
                "exchange",
                "routing_key",
                "redelivered",
                "properties",
                "headers",
                "failure",
                "body",
                "body_encoding",
                "body_size"
            ]
        );
        let failure_keys: Vec<&String> = got["failure"]
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            failure_keys,
            ["origin", "reason", "attempts", "message", "type", "at"]
        );
    }

    #[test]
    fn failure_serializes_like_to_json() {
        let f = Failure {
            origin: Some("q".into()),
            kind: Some("E".into()),
            at: Some(3),
            ..Failure::default()
        };
        assert_eq!(serde_json::to_value(&f).ok(), Some(f.to_json()));
    }

    #[test]
    fn all_properties_in_amqp_order_and_headers_always_present() {
        let props = BasicProperties::default()
            .with_cluster_id("c".into())
            .with_app_id("app".into())
            .with_user_id("guest".into())
            .with_type("order.created".into())
            .with_timestamp(5)
            .with_message_id("m".into())
            .with_expiration("60000".into())
            .with_reply_to("r".into())
            .with_correlation_id("corr".into())
            .with_priority(3)
            .with_delivery_mode(1)
            .with_content_encoding("gzip".into())
            .with_content_type("text/plain".into());
        let got = to_json(&view(&props, b""));
        let keys: Vec<&String> = got["properties"]
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            [
                "content_type",
                "content_encoding",
                "delivery_mode",
                "priority",
                "correlation_id",
                "reply_to",
                "expiration",
                "message_id",
                "timestamp",
                "type",
                "user_id",
                "app_id",
                "cluster_id"
            ]
        );
        assert_eq!(got["properties"]["type"], json!("order.created"));
        assert_eq!(got["headers"], json!({}));
        let empty = BasicProperties::default();
        assert_eq!(to_json(&view(&empty, b""))["properties"], json!({}));
    }

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

    #[test]
    fn x_death_as_rabbitmq_builds_it() {
        let headers = table(vec![deaths(vec![
            death("billing.retry", "expired", 3, 200, "billing.retry"),
            death("billing", "rejected", 4, 100, "billing"),
        ])]);
        let got = x_death(Some(&headers));
        assert_eq!(
            got,
            vec![
                XDeath {
                    queue: "billing.retry".into(),
                    reason: "expired".into(),
                    count: 3,
                    exchange: String::new(),
                    routing_keys: vec!["billing.retry".into()],
                    time: Some(200),
                },
                XDeath {
                    queue: "billing".into(),
                    reason: "rejected".into(),
                    count: 4,
                    exchange: String::new(),
                    routing_keys: vec!["billing".into()],
                    time: Some(100),
                },
            ]
        );
        assert!(x_death(None).is_empty());
        let junk = table(vec![("x-death", long("not an array"))]);
        assert!(x_death(Some(&junk)).is_empty());
        let mixed = table(vec![deaths(vec![
            AMQPValue::Void,
            death("q", "rejected", 1, 1, "q"),
        ])]);
        assert_eq!(x_death(Some(&mixed)).len(), 1);
    }

    #[test]
    fn failure_from_contract_headers() {
        let h = table(vec![
            ("x-error-message", long("boom")),
            ("x-error-type", long("IOError")),
            ("x-attempts", AMQPValue::LongInt(6)),
            ("x-failed-at", AMQPValue::Timestamp(1_700_000_000)),
            ("x-original-exchange", long("")),
            ("x-original-routing-key", long("billing")),
        ]);
        assert_eq!(
            failure(Some(&h)),
            Failure {
                origin: Some("billing".into()),
                reason: None,
                attempts: Some(6),
                message: Some("boom".into()),
                kind: Some("IOError".into()),
                at: Some(1_700_000_000),
            }
        );
        assert_eq!(failure(None), Failure::default());
        assert_eq!(failure(Some(&FieldTable::default())), Failure::default());
    }

    #[test]
    fn empty_error_type_counts_as_absent() {
        let h = table(vec![
            ("x-error-message", long("boom")),
            ("x-error-type", long("")),
            ("MT-Fault-ExceptionType", long("System.TimeoutException")),
        ]);
        let f = failure(Some(&h));
        assert_eq!(f.kind.as_deref(), Some("System.TimeoutException"));
        let only_empty = table(vec![("x-error-type", long(""))]);
        assert_eq!(failure(Some(&only_empty)).kind, None);
    }

    #[test]
    fn original_routing_key_is_origin_only_through_the_default_exchange() {
        let h = table(vec![
            ("x-original-exchange", long("events")),
            ("x-original-routing-key", long("email.sent")),
        ]);
        assert_eq!(failure(Some(&h)).origin, None);
        let with_death = table(vec![
            ("x-original-exchange", long("")),
            ("x-original-routing-key", long("elsewhere")),
            ("x-first-death-queue", long("billing")),
        ]);
        assert_eq!(
            failure(Some(&with_death)).origin.as_deref(),
            Some("billing")
        );
    }

    #[test]
    fn failure_from_sneakers_object() {
        let info = r#"{"error":"RuntimeError","num_attempts":3,"failed_at":"2024-01-01T10:00:00Z",
                       "error_class":"RuntimeError","error_message":"db down"}"#;
        let h = table(vec![("retry_info", long(info))]);
        let f = failure(Some(&h));
        assert_eq!(f.message.as_deref(), Some("db down"));
        assert_eq!(f.kind.as_deref(), Some("RuntimeError"));
        assert_eq!(f.attempts, Some(3));
        assert_eq!(f.at, Some(1_704_103_200));
    }

    #[test]
    fn failure_from_sneakers_array_uses_newest_and_error_fallback() {
        let info = r#"[{"error":"newest","num_attempts":5,"failed_at":"2024-01-01 10:00:00 UTC"},
                       {"error_message":"older","num_attempts":4,"failed_at":1}]"#;
        let h = table(vec![("retry_info", long(info))]);
        let f = failure(Some(&h));
        assert_eq!(f.message.as_deref(), Some("newest"));
        assert_eq!(f.attempts, Some(5));
        assert_eq!(f.at, Some(1_704_103_200));
        let integer_time = table(vec![("retry_info", long(r#"{"failed_at": 1700000000}"#))]);
        assert_eq!(failure(Some(&integer_time)).at, Some(1_700_000_000));
        let bad_time = table(vec![("retry_info", long(r#"{"failed_at": "yesterday"}"#))]);
        assert_eq!(failure(Some(&bad_time)).at, None);
        let not_json = table(vec![("retry_info", long("{oops"))]);
        assert_eq!(failure(Some(&not_json)), Failure::default());
    }

    #[test]
    fn failure_from_masstransit() {
        let h = table(vec![
            ("MT-Fault-Message", long("Object reference not set")),
            (
                "MT-Fault-ExceptionType",
                long("System.NullReferenceException"),
            ),
            ("MT-Fault-Timestamp", long("2024-01-01T10:00:00.1234567Z")),
            ("MT-Fault-RetryCount", AMQPValue::LongInt(2)),
            ("MT-Reason", long("fault")),
        ]);
        assert_eq!(
            failure(Some(&h)),
            Failure {
                origin: None,
                reason: Some("fault".into()),
                attempts: Some(3),
                message: Some("Object reference not set".into()),
                kind: Some("System.NullReferenceException".into()),
                at: Some(1_704_103_200),
            }
        );
    }

    #[test]
    fn failure_from_dead_lettering() {
        let h = table(vec![
            ("x-first-death-queue", long("billing")),
            ("x-first-death-reason", long("rejected")),
            deaths(vec![
                death("billing.retry", "expired", 4, 300, "billing.retry"),
                death("billing", "rejected", 4, 250, "billing"),
            ]),
        ]);
        assert_eq!(
            failure(Some(&h)),
            Failure {
                origin: Some("billing".into()),
                reason: Some("rejected".into()),
                attempts: Some(5),
                message: None,
                kind: None,
                at: Some(250),
            }
        );
    }

    #[test]
    fn dead_lettering_without_first_death_headers_uses_oldest_entry() {
        let h = table(vec![deaths(vec![
            death("work", "rejected", 2, 20, "work"),
            death("first", "expired", 1, 10, "first"),
        ])]);
        let f = failure(Some(&h));
        assert_eq!(f.origin.as_deref(), Some("first"));
        assert_eq!(f.reason.as_deref(), Some("expired"));
        // no rejected entry for the origin: attempts and at are unknown
        assert_eq!(f.attempts, None);
        assert_eq!(f.at, None);
    }

    #[test]
    fn x_death_without_rejected_entry_keeps_earlier_attempts() {
        let h = table(vec![
            ("x-attempts", AMQPValue::LongLongInt(9)),
            ("x-first-death-queue", long("billing")),
            ("x-first-death-reason", long("maxlen")),
            deaths(vec![death("billing", "maxlen", 1, 5, "billing")]),
        ]);
        let f = failure(Some(&h));
        assert_eq!(f.attempts, Some(9));
        assert_eq!(f.reason.as_deref(), Some("maxlen"));
        assert_eq!(f.at, None);
    }

    #[test]
    fn sources_fill_fields_independently_in_order() {
        let h = table(vec![
            // contract: message only
            ("x-error-message", long("from contract")),
            // sneakers: message (loses), type and attempts (win)
            (
                "retry_info",
                long(
                    r#"{"error_message":"from sneakers","error_class":"SneakersError","num_attempts":2}"#,
                ),
            ),
            // masstransit: type and attempts lose, at wins, reason wins over x-death
            ("MT-Fault-ExceptionType", long("MTError")),
            ("MT-Fault-RetryCount", AMQPValue::LongInt(7)),
            ("MT-Fault-Timestamp", long("2024-01-01T10:00:00+01:00")),
            ("MT-Reason", long("fault")),
            // broker: origin only, everything else already known
            ("x-first-death-queue", long("orders")),
            deaths(vec![death("orders", "rejected", 10, 99, "orders")]),
        ]);
        assert_eq!(
            failure(Some(&h)),
            Failure {
                origin: Some("orders".into()),
                reason: Some("fault".into()),
                attempts: Some(2),
                message: Some("from contract".into()),
                kind: Some("SneakersError".into()),
                at: Some(1_704_099_600),
            }
        );
    }

    #[test]
    fn timestamps_parse_strictly() {
        let ok = [
            ("1970-01-01T00:00:00Z", 0),
            ("2024-01-01T10:00:00Z", 1_704_103_200),
            ("2024-01-01t10:00:00z", 1_704_103_200),
            ("2024-01-01 10:00:00 UTC", 1_704_103_200),
            ("2024-01-01T11:00:00+01:00", 1_704_103_200),
            ("2024-01-01 11:00:00 +0100", 1_704_103_200),
            ("2024-01-01T05:30:00-04:30", 1_704_103_200),
            ("2024-01-01T10:00:00.999Z", 1_704_103_200),
            ("2024-02-29T00:00:00Z", 1_709_164_800),
            ("2000-03-01T00:00:00Z", 951_868_800),
            ("1969-12-31T23:59:59Z", -1),
            ("  2024-01-01T10:00:00Z  ", 1_704_103_200),
        ];
        for (s, want) in ok {
            assert_eq!(parse_timestamp(s), Some(want), "{s}");
        }
        let bad = [
            "",
            "2024-01-01",
            "2024-01-01T10:00:00",
            "2024-13-01T10:00:00Z",
            "2023-02-29T10:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T10:00:00.Z",
            "2024-01-01T10:00:00+1:00",
            "2024-01-01T10:00:00 PST",
            "2024-1-01T10:00:00Z",
            "２024-01-01T10:00:00Z",
            "2024-01-01T10:00:00Zjunk",
        ];
        for s in bad {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
    }

    fn roundtrip(props: &BasicProperties, body: &[u8]) -> Record {
        let m = MessageView {
            position: 3,
            queue: "q.error",
            exchange: "events",
            routing_key: "order.created",
            redelivered: true,
            properties: props,
            body,
        };
        let line = serde_json::to_string(&to_json(&m)).unwrap_or_default();
        let parsed: Value = serde_json::from_str(&line).unwrap_or_default();
        match record_from_json(&parsed) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn import_restores_exact_body_bytes() {
        let bodies: Vec<&[u8]> = vec![
            br#"{"tenant":"acme"}"#,
            b"{\n  \"tenant\": \"acme\",\n  \"n\": 1.50\n}\n",
            br#"{"z":1,"a":2}"#,
            br#"{"s":"caf\u00e9 \/ \"q\""}"#,
            b"1e2",
            b"123456789012345678901234567890",
            b"plain text",
            b"",
            b"\x00\x01\x02\xff",
            b"almost utf8 \xc3",
            "ünïcødé ✓".as_bytes(),
        ];
        let props = BasicProperties::default();
        for body in bodies {
            let r = roundtrip(&props, body);
            assert_eq!(r.body, body, "{:?}", String::from_utf8_lossy(body));
            assert_eq!(r.exchange, "events");
            assert_eq!(r.routing_key, "order.created");
        }
    }

    #[test]
    fn import_restores_properties_and_headers() {
        let headers = table(vec![
            ("s", long("text")),
            ("i", AMQPValue::LongLongInt(-5)),
            ("d", AMQPValue::Double(2.5)),
            ("b", AMQPValue::Boolean(true)),
            ("v", AMQPValue::Void),
            (
                "a",
                AMQPValue::FieldArray(vec![long("x"), AMQPValue::LongLongInt(1)].into()),
            ),
            ("t", AMQPValue::FieldTable(table(vec![("k", long("v"))]))),
            ("x-failed-at", AMQPValue::Timestamp(1_700_000_000)),
            ("x-first-death-queue", long("billing")),
            deaths(vec![death(
                "billing",
                "rejected",
                5,
                1_763_800_000,
                "billing.retry",
            )]),
        ]);
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(2)
            .with_priority(9)
            .with_correlation_id("c-1".into())
            .with_reply_to("replies".into())
            .with_expiration("60000".into())
            .with_message_id("m-1".into())
            .with_timestamp(1_763_800_000)
            .with_type("invoice".into())
            .with_user_id("guest".into())
            .with_app_id("billing-worker".into())
            .with_cluster_id("c".into())
            .with_headers(headers);
        let r = roundtrip(&props, b"{}");
        assert_eq!(r.properties, props);
    }

    #[test]
    fn import_widens_header_integers() {
        let headers = table(vec![
            ("n", AMQPValue::LongInt(7)),
            ("f", AMQPValue::Float(0.5)),
        ]);
        let props = BasicProperties::default().with_headers(headers);
        let r = roundtrip(&props, b"");
        let expected = table(vec![
            ("n", AMQPValue::LongLongInt(7)),
            ("f", AMQPValue::Double(0.5)),
        ]);
        assert_eq!(r.properties.headers().as_ref(), Some(&expected));
    }

    #[test]
    fn import_of_minimal_records() {
        let r = record_from_json(&json!({"body": {"a": 1}})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.body, br#"{"a":1}"#);
        assert_eq!(r.exchange, "");
        assert_eq!(r.properties, BasicProperties::default());
        let r = record_from_json(&json!({"body": "hi", "headers": {}}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.body, b"hi");
        assert_eq!(r.properties.headers(), &None);
    }

    #[test]
    fn import_errors_name_the_field() {
        let cases = [
            (json!([]), "record"),
            (json!({"body": 1, "exchange": 5}), "exchange"),
            (json!({"body": 1, "routing_key": []}), "routing_key"),
            (json!({"exchange": ""}), "body"),
            (json!({"body": 1, "body_encoding": "text"}), "body"),
            (json!({"body": "!!", "body_encoding": "base64"}), "body"),
            (
                json!({"body": "x", "body_encoding": "rot13"}),
                "body_encoding",
            ),
            (json!({"body": "x", "body_text": 3}), "body_text"),
            (
                json!({"body": "", "properties": {"priority": 256}}),
                "properties.priority",
            ),
            (
                json!({"body": "", "properties": {"delivery_mode": "2"}}),
                "properties.delivery_mode",
            ),
            (
                json!({"body": "", "properties": {"timestamp": -1}}),
                "properties.timestamp",
            ),
            (
                json!({"body": "", "properties": {"message_id": 5}}),
                "properties.message_id",
            ),
            (
                json!({"body": "", "properties": {"message_id": "x".repeat(256)}}),
                "properties.message_id",
            ),
            (
                json!({"body": "", "properties": {"colour": "red"}}),
                "properties.colour",
            ),
            (json!({"body": "", "properties": []}), "properties"),
            (json!({"body": "", "headers": "x"}), "headers"),
            (
                json!({"body": "", "headers": {"big": u64::MAX}}),
                "headers.big",
            ),
            (
                json!({"body": "", "headers": {"x-death": [{"count": u64::MAX}]}}),
                "headers.x-death[0].count",
            ),
            (
                json!({"body": "", "headers": {"deep": {"list": [1, {"n": u64::MAX}]}}}),
                "headers.deep.list[1].n",
            ),
        ];
        for (record, field) in cases {
            match record_from_json(&record) {
                Ok(_) => panic!("{record} was accepted"),
                Err(e) => {
                    assert!(e.contains(field), "{e:?} does not name {field}");
                    assert!(!e.contains('\n'), "{e:?}");
                }
            }
        }
    }

    #[test]
    fn import_timestamp_fields_only_where_the_broker_puts_them() {
        let r = record_from_json(&json!({
            "body": "",
            "headers": {
                "x-failed-at": 10,
                "other-at": 10,
                "x-death": [{"count": 2, "time": 20, "queue": "q"}],
                "nested": {"time": 30}
            }
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let h = r.properties.headers().clone().unwrap_or_default();
        assert_eq!(
            h.inner().get("x-failed-at"),
            Some(&AMQPValue::Timestamp(10))
        );
        assert_eq!(h.inner().get("other-at"), Some(&AMQPValue::LongLongInt(10)));
        assert_eq!(
            h.inner().get("nested"),
            Some(&AMQPValue::FieldTable(table(vec![(
                "time",
                AMQPValue::LongLongInt(30)
            )])))
        );
        assert_eq!(
            x_death(Some(&h)),
            vec![XDeath {
                queue: "q".into(),
                count: 2,
                time: Some(20),
                ..XDeath::default()
            }]
        );
        let Some(AMQPValue::FieldArray(entries)) = h.inner().get("x-death") else {
            panic!("x-death is not an array");
        };
        let Some(AMQPValue::FieldTable(entry)) = entries.as_slice().first() else {
            panic!("x-death entry is not a table");
        };
        assert_eq!(entry.inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
    }
}
