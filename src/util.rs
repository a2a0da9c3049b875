//! Small helpers shared by several modules: printable names, I/O error reasons, URL redaction.

/// A user-supplied name made safe for a one-line error message: control characters escaped.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| c.escape_default_if_control())
        .collect()
}

trait EscapeControl {
    fn escape_default_if_control(self) -> Vec<char>;
}

impl EscapeControl for char {
    fn escape_default_if_control(self) -> Vec<char> {
        if self.is_control() {
            self.escape_unicode().collect()
        } else {
            vec![self]
        }
    }
}

/// Opens a file to append to: created when missing, never truncated (the contract's rule for
/// `export` and `peek --save`).
pub(crate) fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// An I/O error's reason without Rust's "(os error N)" suffix.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_lowercase(),
        None => text,
    }
}

/// A URL with its password replaced by `***`, safe to show anywhere.
/// For a URL that did not parse, where user and password cannot be told apart (a password may
/// hold `/`, `?`, `#` or `@`): everything between `://` and the last `@` becomes `***`.
pub(crate) fn hide_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return match url.rfind('@') {
            Some(at) => format!("***{}", &url[at..]),
            None => url.to_string(),
        };
    };
    let rest = &url[scheme_end + 3..];
    match rest.rfind('@') {
        Some(at) => format!("{}://***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_string(),
    }
}

pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let redacted = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => userinfo.to_string(),
    };
    format!(
        "{}://{}@{}{}",
        &url[..scheme_end],
        redacted,
        &authority[at + 1..],
        &rest[authority_end..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unparsed_url_shows_no_userinfo_at_all() {
        assert_eq!(
            hide_userinfo("amqp://guest:gu/est@127.0.0.1:5672/%2f"),
            "amqp://***@127.0.0.1:5672/%2f"
        );
        assert_eq!(hide_userinfo("amqp://a:b#c@h"), "amqp://***@h");
        assert_eq!(hide_userinfo("amqp://h:99999"), "amqp://h:99999");
        assert_eq!(hide_userinfo("u:p@h"), "***@h");
    }

    #[test]
    fn password_is_replaced() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
    }

    #[test]
    fn password_with_at_sign_and_slash_is_replaced_whole() {
        assert_eq!(
            redact_url("amqps://u:p%40ss@w0rd@host/vh"),
            "amqps://u:***@host/vh"
        );
    }

    #[test]
    fn url_without_credentials_is_unchanged() {
        assert_eq!(redact_url("amqp://host:5672"), "amqp://host:5672");
        assert_eq!(redact_url("amqp://user@host"), "amqp://user@host");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn control_characters_in_names_are_escaped() {
        assert_eq!(printable("a\u{1b}[31mb"), "a\\u{1b}[31mb");
    }

    #[test]
    fn io_reason_drops_os_error_suffix() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(io_reason(&e), "no such file or directory");
    }
}

/// 17825792 → "17,825,792": sizes in messages people read.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod thousands_tests {
    #[test]
    fn groups_of_three() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(16_777_216), "16,777,216");
    }
}
