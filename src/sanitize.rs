//! Owns terminal safety: text taken from messages is stripped of anything a terminal would interpret (escape sequences, control characters) before it is printed.

/// Removes C0 and C1 control characters, DEL and whole escape sequences (CSI, OSC, DCS...),
/// so nothing from a message can move the cursor, change colours, set the window title or
/// ring the bell. A run of such characters becomes one space when it held a tab, line feed
/// or carriage return (so words do not glue together), and nothing otherwise. Bidirectional
/// overrides are removed too: they can make a terminal show text in a misleading order.
pub fn for_terminal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    // Some(true) while inside a run of removed characters that needs a space.
    let mut run: Option<bool> = None;
    while let Some(c) = chars.next() {
        if !is_removed(c) {
            if run == Some(true) {
                out.push(' ');
            }
            run = None;
            out.push(c);
            continue;
        }
        let spacing = matches!(c, '\t' | '\n' | '\r');
        run = Some(run == Some(true) || spacing);
        match c {
            '\u{1b}' => match chars.peek() {
                Some('[') => {
                    chars.next();
                    skip_csi(&mut chars);
                }
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    chars.next();
                    skip_string(&mut chars);
                }
                // Two-character sequences such as ESC c (reset) or ESC 7 (save cursor).
                Some(&next) if (' '..='~').contains(&next) => {
                    chars.next();
                }
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            _ => {}
        }
    }
    if run == Some(true) {
        out.push(' ');
    }
    out
}

/// [`for_terminal`], then cut to at most `width` characters; a cut text ends in "…", which
/// counts towards the width.
pub(crate) fn preview(s: &str, width: usize) -> String {
    let clean = for_terminal(s);
    if clean.chars().count() <= width {
        return clean;
    }
    if width == 0 {
        return String::new();
    }
    let mut cut: String = clean.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

/// The longest error line dlq prints (contract section 7: "at most about 300 characters").
pub const MAX_LINE: usize = 300;

/// One line for stderr: [`for_terminal`] (so nothing from a message, a name or the broker can
/// act on the terminal or break the line), cut to [`MAX_LINE`] characters with "…".
pub fn line(s: &str) -> String {
    preview(s, MAX_LINE)
}

fn is_removed(c: char) -> bool {
    c.is_control() /* C0, DEL and C1 */ || is_bidi_control(c)
}

/// The Unicode bidi controls that can make a terminal show text in a misleading order
/// (contract section 5): the marks U+200E/F, embeddings and overrides U+202A–E, isolates
/// U+2066–9.
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Skips the rest of a control sequence: parameter and intermediate bytes, then one final byte.
/// Anything else ends it early, so a malformed sequence cannot swallow the text after it.
fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(&c) = chars.peek() {
        match c {
            '\u{30}'..='\u{3f}' | '\u{20}'..='\u{2f}' => {
                chars.next();
            }
            '\u{40}'..='\u{7e}' => {
                chars.next();
                return;
            }
            _ => return,
        }
    }
}

/// Skips an OSC/DCS/SOS/PM/APC payload up to its terminator (BEL, ESC \ or ST). Control
/// characters other than those end it early: terminals abort such strings on them too, and
/// it keeps an unterminated sequence from hiding a whole message.
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(&c) = chars.peek() {
        match c {
            '\u{7}' | '\u{9c}' => {
                chars.next();
                return;
            }
            '\u{1b}' => {
                chars.next();
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            c if c.is_control() => return,
            _ => {
                chars.next();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched() {
        assert_eq!(for_terminal("hello, wörld ✓ 日本"), "hello, wörld ✓ 日本");
        assert_eq!(for_terminal(""), "");
    }

    #[test]
    fn colour_sequences_are_removed_whole() {
        assert_eq!(for_terminal("\u{1b}[31mred\u{1b}[0m text"), "red text");
        assert_eq!(for_terminal("\u{1b}[1;38;5;196mbold"), "bold");
        assert_eq!(for_terminal("a\u{1b}[2Jb\u{1b}[Hc"), "abc");
    }

    #[test]
    fn c1_csi_is_removed_whole() {
        assert_eq!(for_terminal("x\u{9b}31my"), "xy");
        assert_eq!(for_terminal("x\u{85}y"), "xy");
    }

    #[test]
    fn bell_and_other_c0_and_del_vanish() {
        assert_eq!(for_terminal("ding\u{7}dong"), "dingdong");
        assert_eq!(for_terminal("a\u{0}b\u{8}c\u{7f}d"), "abcd");
    }

    #[test]
    fn line_breaks_and_tabs_become_one_space() {
        assert_eq!(for_terminal("one\ntwo"), "one two");
        assert_eq!(for_terminal("one\r\n\r\ntwo"), "one two");
        assert_eq!(for_terminal("a\tb"), "a b");
        assert_eq!(for_terminal("a\n\u{1b}[31m\tb"), "a b");
        assert_eq!(for_terminal("end\n"), "end ");
    }

    #[test]
    fn title_and_hyperlink_strings_are_removed() {
        assert_eq!(for_terminal("a\u{1b}]0;pwned\u{7}b"), "ab");
        assert_eq!(
            for_terminal("a\u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\b"),
            "alinkb"
        );
        assert_eq!(for_terminal("a\u{9d}0;t\u{9c}b"), "ab");
        // unterminated: the payload stops at the next control character
        assert_eq!(for_terminal("a\u{1b}]0;t\nrest"), "a rest");
    }

    #[test]
    fn other_escapes_and_lone_escape() {
        assert_eq!(for_terminal("a\u{1b}cb"), "ab");
        assert_eq!(for_terminal("end\u{1b}"), "end");
        assert_eq!(for_terminal("\u{1b}\u{1b}[0mx"), "x");
    }

    #[test]
    fn bidi_overrides_are_removed() {
        assert_eq!(for_terminal("abc\u{202e}fed"), "abcfed");
        assert_eq!(for_terminal("\u{2066}x\u{2069}"), "x");
    }

    #[test]
    fn preview_cuts_on_characters() {
        assert_eq!(preview("short", 10), "short");
        assert_eq!(preview("exactly10!", 10), "exactly10!");
        assert_eq!(preview("abcdefghijk", 5), "abcd…");
        assert_eq!(preview("héllo wörld", 5), "héll…");
        assert_eq!(preview("日本語のテキスト", 4), "日本語…");
        assert_eq!(preview("🦀🦀🦀", 2), "🦀…");
        assert_eq!(preview("abc", 1), "…");
        assert_eq!(preview("abc", 0), "");
        assert_eq!(preview("", 0), "");
    }

    #[test]
    fn preview_sanitizes_before_measuring() {
        assert_eq!(preview("\u{1b}[31mred\u{1b}[0m", 3), "red");
        assert_eq!(preview("a\nb\u{1b}[31mcdef", 4), "a b…");
    }
}
