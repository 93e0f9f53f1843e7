//! The rules for free text that reaches the access log — a hold's reason,
//! a request's authority, warrant and legal basis, a cancellation's or a
//! revocation's reason, operator names — and for showing such text again.
//! One place, used by every field:
//!
//! * [`check`] refuses control characters (line breaks, tabs, ANSI
//!   escapes, C1 controls), bidirectional overrides and other invisible
//!   format characters (they forge or hide lines in `audit show` and
//!   `hold list`), and *number-like runs*: [`MIN_NUMBER_DIGITS`] or more
//!   digits, possibly split by separators (`-`, `.`, space, parentheses,
//!   a leading `+`), which is what a phone number, IMSI or IMEI looks like.
//!   The access log is never purged, so an identifier typed into free text
//!   would be kept in clear for ever; targets are given as targets and
//!   sealed. A calendar date (`2026-12-04`) and the year and serial of a
//!   request id (`KR-SPO-2026-000123`) are not number-like runs.
//!   The error never quotes the text.
//! * [`escape`] shows text from the log with every character that
//!   [`check`] would refuse written as `\u{…}` (entries written before
//!   these rules, or by hand).
//! * [`sanitize`] reduces a name typed on the command line to what can be
//!   logged whatever it was.

use std::borrow::Cow;
use std::fmt;

/// A run of this many digits (separators allowed between them) is taken
/// for an identifier.
pub const MIN_NUMBER_DIGITS: usize = 7;

/// Separators allowed inside a number-like run (`010-1234-5678`,
/// `+82 10 1234 5678`, `(02) 123.4567`).
const SEPARATORS: &[char] = &['-', '.', ' ', '(', ')', '+', '/', '\u{a0}'];

/// At most this many separators in a row still join two groups of digits.
const MAX_SEPARATOR_RUN: usize = 3;

/// What is wrong with a text. Never holds the text, only positions and
/// code points of invisible characters and counts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// A control character (line break, tab, escape, …) at character
    /// `position` (0-based).
    #[error("contains the control character U+{code:04X} at character {position}; line breaks, tabs and escape sequences are not allowed")]
    Control {
        /// 0-based character index of the first offending character.
        position: usize,
        /// Its Unicode code point.
        code: u32,
    },
    /// A bidirectional override or another invisible format character.
    #[error("contains the invisible formatting character U+{code:04X} at character {position} (a bidirectional override or zero-width character)")]
    Invisible {
        /// 0-based character index of the first offending character.
        position: usize,
        /// Its Unicode code point.
        code: u32,
    },
    /// A run of `digits` digits: an identifier must not be written in free
    /// text (the value is not repeated here).
    #[error("contains a number-like run of {digits} digits, which may be a phone number, IMSI or IMEI; identifiers must not be written in free text (the access log is never purged): give targets as targets, and refer to cases by their id")]
    NumberLike {
        /// How many digits the run holds (separators not counted).
        digits: usize,
    },
}

/// Bidirectional controls and other invisible format characters (Unicode
/// category Cf in use, line and paragraph separators).
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{61c}' | '\u{180e}'
        | '\u{200b}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2069}'
        | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}')
}

/// True for a character that [`check`] refuses wherever it is.
fn unsafe_char(c: char) -> bool {
    c.is_control() || invisible(c)
}

fn is_digit(c: char) -> bool {
    c.is_numeric()
}

/// The longest run of digits in `text`, counting digits joined by at
/// most `MAX_SEPARATOR_RUN` (3) separators, calendar dates excepted.
pub fn longest_number_run(text: &str) -> usize {
    let chars: Vec<char> = text.chars().collect();
    let mut best = 0;
    let mut i = 0;
    while i < chars.len() {
        if !is_digit(chars[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let mut digits = 0;
        let mut end = i;
        let mut j = i;
        loop {
            while j < chars.len() && is_digit(chars[j]) {
                digits += 1;
                j += 1;
            }
            end = end.max(j);
            let mut k = j;
            while k < chars.len() && SEPARATORS.contains(&chars[k]) && k - j < MAX_SEPARATOR_RUN {
                k += 1;
            }
            if k > j && k < chars.len() && is_digit(chars[k]) {
                j = k;
            } else {
                break;
            }
        }
        let run: String = chars[start..end].iter().collect();
        let after_letters =
            start >= 2 && chars[start - 1] == '-' && chars[start - 2].is_ascii_alphabetic();
        let exempt = is_date(&run) || (after_letters && is_year_serial(&run));
        if !exempt {
            best = best.max(digits);
        }
        i = end.max(i + 1);
    }
    best
}

/// `YYYY-N…` (a year, 1900–2099, and a serial) right after `LETTERS-`:
/// the number part of a request id such as `KR-SPO-2026-000123`.
fn is_year_serial(run: &str) -> bool {
    let Some((year, serial)) = run.split_once('-') else {
        return false;
    };
    year.len() == 4
        && (year.starts_with("19") || year.starts_with("20"))
        && year.bytes().all(|b| b.is_ascii_digit())
        && !serial.is_empty()
        && serial.bytes().all(|b| b.is_ascii_digit())
}

/// `YYYY-MM-DD` with a real month and day: a date, not an identifier.
fn is_date(run: &str) -> bool {
    let b = run.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && chrono_free_date(&run[0..4], &run[5..7], &run[8..10])
}

fn chrono_free_date(y: &str, m: &str, d: &str) -> bool {
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !(all_digits(y) && all_digits(m) && all_digits(d)) {
        return false;
    }
    let (m, d): (u32, u32) = (m.parse().unwrap_or(0), d.parse().unwrap_or(0));
    (1..=12).contains(&m) && (1..=31).contains(&d)
}

/// Checks one free-text field: no control or invisible character, no
/// number-like run. The error never quotes `text`.
pub fn check(text: &str) -> Result<(), TextError> {
    for (position, c) in text.chars().enumerate() {
        if c.is_control() {
            return Err(TextError::Control {
                position,
                code: c as u32,
            });
        }
        if invisible(c) {
            return Err(TextError::Invisible {
                position,
                code: c as u32,
            });
        }
    }
    let digits = longest_number_run(text);
    if digits >= MIN_NUMBER_DIGITS {
        return Err(TextError::NumberLike { digits });
    }
    Ok(())
}

/// `text` as it may be shown on a terminal: every control or invisible
/// character written as `\u{…}`; unchanged when there is none.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A displayable wrapper: `format!("{}", Escaped(s))` is [`escape`]`(s)`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&escape(self.0))
    }
}

/// A name as typed on the command line (anything) reduced to what can be
/// logged safely: ASCII letters, digits and `._-`, at most 64; more than
/// six digits in all makes it `<redacted>` (it may be a number).
pub fn sanitize(s: &str) -> String {
    let t: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .take(64)
        .collect();
    if t.bytes().filter(u8::is_ascii_digit).count() >= MIN_NUMBER_DIGITS {
        "<redacted>".into()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_text_passes() {
        for ok in [
            "Seoul Central District Prosecutors' Office",
            "2026-영-0042",
            "통신비밀보호법 제13조",
            "dispute KR-SPO-2026-0042, until 2026-12-04",
            "case 123 456",
            "",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn control_and_invisible_characters_are_refused_by_position() {
        assert_eq!(
            check("a\nb"),
            Err(TextError::Control {
                position: 1,
                code: 10
            })
        );
        assert!(matches!(
            check("x\u{1b}[31m"),
            Err(TextError::Control { code: 0x1b, .. })
        ));
        assert!(matches!(check("tab\there"), Err(TextError::Control { .. })));
        assert!(matches!(check("\u{85}"), Err(TextError::Control { .. })));
        for c in ['\u{202e}', '\u{2066}', '\u{200b}', '\u{feff}', '\u{2028}'] {
            assert!(
                matches!(
                    check(&format!("a{c}b")),
                    Err(TextError::Invisible { position: 1, .. })
                ),
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn number_like_runs_are_refused_and_never_quoted() {
        for bad in [
            "call 01012345678",
            "010-1234-5678",
            "+82 10 1234 5678",
            "(02) 123.4567",
            "imsi 450051234567890",
            "123-4567",
            "１２３４５６７",
        ] {
            let e = check(bad).unwrap_err();
            assert!(matches!(e, TextError::NumberLike { .. }), "{bad}: {e}");
            let msg = e.to_string();
            for digits in ["1234", "4567", "5678"] {
                assert!(!msg.contains(digits), "{msg}");
            }
        }
        assert_eq!(longest_number_run("010-1234-5678"), 11);
        assert_eq!(longest_number_run("a 2026-12-04 b"), 0);
        assert_eq!(longest_number_run("123456"), 6);
        // Words break a run; a date is not a number.
        assert_eq!(check("123 abc 4567"), Ok(()));
        assert_eq!(check("from 2026-01-01 to 2026-01-31"), Ok(()));
        // A date-shaped run that is not a date is a number.
        assert!(check("2026-13-45").is_err());
        // The number part of a request id is not an identifier; the same
        // digits alone are.
        assert_eq!(check("see KR-SPO-2026-000123"), Ok(()));
        assert!(check("see 2026-000123").is_err());
    }

    #[test]
    fn escape_shows_every_refused_character() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(
            escape("a\nb\u{1b}[2J\u{202e}"),
            "a\\u{a}b\\u{1b}[2J\\u{202e}"
        );
        assert_eq!(escape("back\\slash"), "back\\slash");
        assert_eq!(format!("{:<6}|", Escaped("ab")), "ab    |");
        assert!(!escape("x\r\ny").contains('\n'));
    }

    #[test]
    fn sanitize_keeps_safe_characters_and_redacts_numbers() {
        assert_eq!(sanitize("kim"), "kim");
        assert_eq!(sanitize("01012345678"), "<redacted>");
        assert_eq!(sanitize("a b;c\n"), "abc");
        assert_eq!(sanitize("kim.privacy"), "kim.privacy");
    }
}
