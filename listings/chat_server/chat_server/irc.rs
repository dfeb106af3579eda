//! The IRC line: parsing and formatting one message (RFC 1459 2.3, RFC 2812
//! 2.3.1, IRCv3 message tags), the numerics the router sends, and the name
//! rules (casemapping, valid nicks and channels).
//!
//! Everything here is pure: no I/O, no allocation beyond the message itself,
//! no recursion, so it runs on any coroutine's stack and is tested without
//! sockets. A line reaches [`Message::parse`] already bounded (the reader
//! refuses lines past [`MAX_LINE`]) and without its CR/LF.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// RFC 1459 2.3: 512 bytes with the CRLF; the server refuses longer lines with 417.
pub const MAX_LINE: usize = 512;

/// RFC 2812 2.3: a message has at most 15 parameters.
pub const MAX_PARAMS: usize = 15;

// ANCHOR: message
/// One IRC message: `[@tags] [:prefix] COMMAND [params...] [:trailing]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// IRCv3 tags, values unescaped (`server-time` is the one this server sends).
    pub tags: Vec<(String, String)>,
    /// Who sent it (`nick!user@host` or the server's name); clients send none.
    pub prefix: Option<String>,
    /// As sent: compare with `eq_ignore_ascii_case` or [`Message::command_upper`].
    pub command: String,
    /// Middle parameters and the trailing one, with its `:` removed.
    pub params: Vec<String>,
}

/// Why a line is not a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but spaces.
    Empty,
    /// Tags or a prefix and then nothing.
    NoCommand,
    /// More than [`MAX_PARAMS`] parameters.
    TooManyParams,
    /// An `@` section that is empty or has an empty key.
    BadTags,
}
// ANCHOR_END: message

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Empty => "empty line",
            ParseError::NoCommand => "no command",
            ParseError::TooManyParams => "more than 15 parameters",
            ParseError::BadTags => "malformed message tags",
        })
    }
}

// ANCHOR: parse
impl Message {
    /// Parses one line (`line` has no CR/LF). Runs of spaces between words
    /// count as one, as most servers accept; a parameter after `" :"` is the
    /// trailing one and keeps its spaces. A 16th parameter is an error rather
    /// than being glued onto the 15th: a client that sends one is broken, and
    /// saying so beats guessing what it meant.
    pub fn parse(line: &str) -> Result<Message, ParseError> {
        let mut rest = line.trim_start_matches(' ');
        if rest.is_empty() {
            return Err(ParseError::Empty);
        }
        let mut tags = Vec::new();
        if let Some(after) = rest.strip_prefix('@') {
            let (section, tail) = after.split_once(' ').unwrap_or((after, ""));
            tags = parse_tags(section)?;
            rest = tail.trim_start_matches(' ');
        }
        let mut prefix = None;
        if let Some(after) = rest.strip_prefix(':') {
            let (p, tail) = after.split_once(' ').unwrap_or((after, ""));
            prefix = Some(p.to_string());
            rest = tail.trim_start_matches(' ');
        }
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if command.is_empty() {
            return Err(ParseError::NoCommand);
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if params.len() == MAX_PARAMS {
                return Err(ParseError::TooManyParams);
            }
            if let Some(trailing) = rest.strip_prefix(':') {
                params.push(trailing.to_string());
                break;
            }
            let (word, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            params.push(word.to_string());
            rest = tail;
        }
        Ok(Message {
            tags,
            prefix,
            command: command.to_string(),
            params,
        })
    }
    // ANCHOR_END: parse

    /// A message with no tags and no prefix (what the server builds replies from).
    pub fn new(command: &str, params: &[&str]) -> Message {
        Message {
            tags: Vec::new(),
            prefix: None,
            command: command.to_string(),
            params: params.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The same message sent by `prefix` (`nick!user@host` or the server name).
    pub fn with_prefix(mut self, prefix: &str) -> Message {
        self.prefix = Some(prefix.to_string());
        self
    }

    /// The same message with one more tag; `value` is escaped when formatted.
    pub fn with_tag(mut self, key: &str, value: &str) -> Message {
        self.tags.push((key.to_string(), value.to_string()));
        self
    }

    /// The command in upper case, for matching (`privmsg` is `PRIVMSG`).
    pub fn command_upper(&self) -> String {
        self.command.to_ascii_uppercase()
    }
}

/// IRCv3 tags: `key[=value]` separated by `;`, values escaped.
fn parse_tags(section: &str) -> Result<Vec<(String, String)>, ParseError> {
    if section.is_empty() {
        return Err(ParseError::BadTags);
    }
    let mut tags = Vec::new();
    for tag in section.split(';') {
        // A trailing `;` leaves an empty last tag, which IRCv3 allows.
        if tag.is_empty() {
            continue;
        }
        let (key, value) = tag.split_once('=').unwrap_or((tag, ""));
        if key.is_empty() {
            return Err(ParseError::BadTags);
        }
        tags.push((key.to_string(), unescape_tag(value)));
    }
    Ok(tags)
}

/// IRCv3 message-tags: `\:` `;`, `\s` space, `\\` `\`, `\r` CR, `\n` LF;
/// another escaped character stands for itself; a lone final `\` is dropped.
fn unescape_tag(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

// ANCHOR: display
impl fmt::Display for Message {
    /// One line without its CRLF. The last parameter gets a `:` when it needs
    /// one (empty, has a space, starts with `:`). CR, LF and NUL anywhere
    /// become spaces: whatever a client put in a parameter, the server emits
    /// exactly one line, so no one can inject a second line into another
    /// client's stream.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.tags.is_empty() {
            f.write_str("@")?;
            for (i, (key, value)) in self.tags.iter().enumerate() {
                if i > 0 {
                    f.write_str(";")?;
                }
                write_clean(f, key)?;
                if !value.is_empty() {
                    f.write_str("=")?;
                    write_tag_value(f, value)?;
                }
            }
            f.write_str(" ")?;
        }
        if let Some(prefix) = &self.prefix {
            f.write_str(":")?;
            write_clean(f, prefix)?;
            f.write_str(" ")?;
        }
        write_clean(f, &self.command)?;
        for (i, param) in self.params.iter().enumerate() {
            f.write_str(" ")?;
            let last = i + 1 == self.params.len();
            if last && (param.is_empty() || param.contains(' ') || param.starts_with(':')) {
                f.write_str(":")?;
            }
            write_clean(f, param)?;
        }
        Ok(())
    }
}
// ANCHOR_END: display

/// Writes `s` with CR, LF and NUL replaced by spaces.
fn write_clean(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if !s.contains(['\r', '\n', '\0']) {
        return f.write_str(s);
    }
    for c in s.chars() {
        let c = if matches!(c, '\r' | '\n' | '\0') {
            ' '
        } else {
            c
        };
        fmt::Write::write_char(f, c)?;
    }
    Ok(())
}

/// The inverse of [`unescape_tag`] (NUL, which has no escape, becomes a space).
fn write_tag_value(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    for c in value.chars() {
        match c {
            ';' => f.write_str("\\:")?,
            ' ' => f.write_str("\\s")?,
            '\\' => f.write_str("\\\\")?,
            '\r' => f.write_str("\\r")?,
            '\n' => f.write_str("\\n")?,
            '\0' => f.write_str("\\s")?,
            c => fmt::Write::write_char(f, c)?,
        }
    }
    Ok(())
}

/// The numeric replies the router sends (RFC 1459 / 2812, IRCv3 SASL).
pub mod numeric {
    pub const RPL_WELCOME: &str = "001";
    pub const RPL_YOURHOST: &str = "002";
    pub const RPL_CREATED: &str = "003";
    pub const RPL_MYINFO: &str = "004";
    pub const RPL_ISUPPORT: &str = "005";
    pub const RPL_UMODEIS: &str = "221";
    // AWAY: the chapter's exercise 1 uses these; the final program does not.
    #[allow(dead_code)]
    pub const RPL_AWAY: &str = "301";
    #[allow(dead_code)]
    pub const RPL_UNAWAY: &str = "305";
    #[allow(dead_code)]
    pub const RPL_NOWAWAY: &str = "306";
    pub const RPL_WHOISUSER: &str = "311";
    pub const RPL_WHOISSERVER: &str = "312";
    pub const RPL_ENDOFWHO: &str = "315";
    pub const RPL_ENDOFWHOIS: &str = "318";
    pub const RPL_WHOISCHANNELS: &str = "319";
    pub const RPL_WHOISACCOUNT: &str = "330";
    pub const RPL_LISTSTART: &str = "321";
    pub const RPL_LIST: &str = "322";
    pub const RPL_LISTEND: &str = "323";
    pub const RPL_CHANNELMODEIS: &str = "324";
    pub const RPL_NOTOPIC: &str = "331";
    pub const RPL_TOPIC: &str = "332";
    pub const RPL_TOPICWHOTIME: &str = "333";
    pub const RPL_WHOREPLY: &str = "352";
    pub const RPL_NAMREPLY: &str = "353";
    pub const RPL_ENDOFNAMES: &str = "366";
    pub const RPL_ENDOFBANLIST: &str = "368";
    pub const RPL_MOTD: &str = "372";
    pub const RPL_MOTDSTART: &str = "375";
    pub const RPL_ENDOFMOTD: &str = "376";
    pub const ERR_UNKNOWNERROR: &str = "400";
    pub const ERR_NOSUCHNICK: &str = "401";
    pub const ERR_NOSUCHCHANNEL: &str = "403";
    pub const ERR_CANNOTSENDTOCHAN: &str = "404";
    pub const ERR_TOOMANYCHANNELS: &str = "405";
    pub const ERR_NOORIGIN: &str = "409";
    pub const ERR_INVALIDCAPCMD: &str = "410";
    pub const ERR_NORECIPIENT: &str = "411";
    pub const ERR_NOTEXTTOSEND: &str = "412";
    pub const ERR_INPUTTOOLONG: &str = "417";
    pub const ERR_UNKNOWNCOMMAND: &str = "421";
    pub const ERR_NONICKNAMEGIVEN: &str = "431";
    pub const ERR_ERRONEUSNICKNAME: &str = "432";
    pub const ERR_NICKNAMEINUSE: &str = "433";
    pub const ERR_NOTONCHANNEL: &str = "442";
    pub const ERR_NOTREGISTERED: &str = "451";
    pub const ERR_NEEDMOREPARAMS: &str = "461";
    pub const ERR_ALREADYREGISTERED: &str = "462";
    pub const ERR_PASSWDMISMATCH: &str = "464";
    pub const ERR_CHANOPRIVSNEEDED: &str = "482";
    pub const ERR_UMODEUNKNOWNFLAG: &str = "501";
    pub const ERR_USERSDONTMATCH: &str = "502";
    pub const RPL_LOGGEDIN: &str = "900";
    pub const RPL_SASLSUCCESS: &str = "903";
    pub const ERR_SASLFAIL: &str = "904";
    pub const ERR_SASLTOOLONG: &str = "905";
    pub const ERR_SASLABORTED: &str = "906";
    pub const ERR_SASLALREADY: &str = "907";
    pub const RPL_SASLMECHS: &str = "908";
}

// ANCHOR: names
/// RFC 1459 casemapping ("rfc1459": A-Z [ ] \ ~ fold to a-z { } | ^), used
/// for nicks and channels: `Nick[1]` and `nick{1}` are the same name.
/// Other characters, non-ASCII included, are left as they are (the
/// `CASEMAPPING=rfc1459` the server advertises promises nothing more).
pub fn casefold(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            '[' => '{',
            ']' => '}',
            '\\' => '|',
            '~' => '^',
            c => c,
        })
        .collect()
}

/// RFC 2812 2.3.1: a letter or special first, then letters, digits,
/// specials or `-`; at most `max_len` bytes.
pub fn valid_nick(nick: &str, max_len: usize) -> bool {
    let special = |c: u8| b"[]\\`_^{|}".contains(&c);
    let bytes = nick.as_bytes();
    match bytes.first() {
        Some(&first) if first.is_ascii_alphabetic() || special(first) => {}
        _ => return false,
    }
    bytes.len() <= max_len
        && bytes[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || special(c) || c == b'-')
}

/// `#` then at least one character, none of them space, comma, BEL, `:`
/// (nor NUL, CR, LF, which no line can carry); at most `max_len` bytes with
/// the `#`. Only `#` channels exist here (`CHANTYPES=#`).
pub fn valid_channel(name: &str, max_len: usize) -> bool {
    match name.strip_prefix('#') {
        Some(rest) => {
            !rest.is_empty()
                && name.len() <= max_len
                && !rest.contains([' ', ',', '\x07', ':', '\0', '\r', '\n'])
        }
        None => false,
    }
}
// ANCHOR_END: names

/// IRCv3 server-time tag value for a time: "2026-12-02T08:00:00.123Z"
/// (UTC, milliseconds). A time before 1970 is written as the epoch.
pub fn server_time(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let secs = (ms / 1000) as u64;
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar: Howard Hinnant's `civil_from_days`, for non-negative days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_prefix_command_middle_and_trailing() {
        let m = Message::parse(":nick!u@h PRIVMSG #room :hello there").unwrap();
        assert_eq!(m.prefix.as_deref(), Some("nick!u@h"));
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, ["#room", "hello there"]);
        assert!(m.tags.is_empty());
    }

    #[test]
    fn runs_of_spaces_separate_like_one() {
        let m = Message::parse("  USER  guest 0   * :Real Name ").unwrap();
        assert_eq!(m.params, ["guest", "0", "*", "Real Name "]);
        assert_eq!(Message::parse("NICK alice  ").unwrap().params, ["alice"]);
    }

    #[test]
    fn trailing_may_be_empty_or_hold_colons() {
        assert_eq!(Message::parse("TOPIC #a :").unwrap().params, ["#a", ""]);
        let m = Message::parse("PRIVMSG bob ::) a: b").unwrap();
        assert_eq!(m.params, ["bob", ":) a: b"]);
    }

    #[test]
    fn command_is_matched_case_blind() {
        let m = Message::parse("privmsg bob hi").unwrap();
        assert_eq!(m.command, "privmsg");
        assert_eq!(m.command_upper(), "PRIVMSG");
    }

    #[test]
    fn errors_are_told_apart() {
        assert_eq!(Message::parse(""), Err(ParseError::Empty));
        assert_eq!(Message::parse("   "), Err(ParseError::Empty));
        assert_eq!(Message::parse(":prefix"), Err(ParseError::NoCommand));
        assert_eq!(Message::parse(":prefix   "), Err(ParseError::NoCommand));
        assert_eq!(Message::parse("@a=b"), Err(ParseError::NoCommand));
        assert_eq!(Message::parse("@ PING"), Err(ParseError::BadTags));
        assert_eq!(Message::parse("@=v PING"), Err(ParseError::BadTags));
        assert_eq!(
            ParseError::TooManyParams.to_string(),
            "more than 15 parameters"
        );
    }

    #[test]
    fn fifteen_params_pass_sixteen_do_not() {
        let fifteen: Vec<String> = (1..=15).map(|i| i.to_string()).collect();
        let line = format!("CMD {}", fifteen.join(" "));
        assert_eq!(Message::parse(&line).unwrap().params, fifteen);
        let trailing = format!("CMD {} :last one", fifteen[..14].join(" "));
        assert_eq!(Message::parse(&trailing).unwrap().params[14], "last one");
        assert_eq!(
            Message::parse(&format!("{line} 16")),
            Err(ParseError::TooManyParams)
        );
        assert_eq!(
            Message::parse(&format!("{line} :sixteenth")),
            Err(ParseError::TooManyParams)
        );
    }

    #[test]
    fn tags_are_unescaped_on_input_and_escaped_on_output() {
        let m =
            Message::parse(r"@time=2026-12-02T08:00:00.000Z;k=a\:b\sc\\d\r\ne\x\;flag :s PING x")
                .unwrap();
        assert_eq!(
            m.tags,
            [
                ("time".into(), "2026-12-02T08:00:00.000Z".into()),
                ("k".into(), "a;b c\\d\r\nex".into()),
                ("flag".into(), String::new()),
            ]
        );
        let out = Message::new("PING", &["x"])
            .with_tag("k", "a;b c\\d\r\n")
            .to_string();
        assert_eq!(out, r"@k=a\:b\sc\\d\r\n PING x");
        assert_eq!(Message::parse(&out).unwrap().tags[0].1, "a;b c\\d\r\n");
    }

    #[test]
    fn formatting_adds_the_colon_only_where_needed() {
        let m = Message::new("PRIVMSG", &["#room", "hi"]).with_prefix("a!u@h");
        assert_eq!(m.to_string(), ":a!u@h PRIVMSG #room hi");
        assert_eq!(
            Message::new("PRIVMSG", &["#r", "hi all"]).to_string(),
            "PRIVMSG #r :hi all"
        );
        assert_eq!(Message::new("TOPIC", &["#r", ""]).to_string(), "TOPIC #r :");
        assert_eq!(Message::new("X", &[":)"]).to_string(), "X ::)");
        assert_eq!(Message::new("QUIT", &[]).to_string(), "QUIT");
    }

    #[test]
    fn parse_and_format_round_trip() {
        for line in [
            ":srv 001 alice :Welcome to chat.local alice",
            "@time=2026-12-02T08:00:00.123Z :a!u@h PRIVMSG #r :x y",
            "JOIN #a,#b key1,key2",
            "PING srv",
            "CAP REQ :server-time sasl",
            "TOPIC #r :",
        ] {
            assert_eq!(Message::parse(line).unwrap().to_string(), line);
        }
    }

    #[test]
    fn no_parameter_can_smuggle_a_second_line() {
        let m = Message::new("PRIVMSG", &["#r", "hi\r\nQUIT :bye\0"]).with_prefix("a\nb");
        assert_eq!(m.to_string(), ":a b PRIVMSG #r :hi  QUIT :bye ");
    }

    #[test]
    fn casefold_follows_rfc1459() {
        assert_eq!(casefold("Nick[1]\\~"), "nick{1}|^");
        assert_eq!(casefold("#Rust"), casefold("#rust"));
        assert_eq!(casefold("Ünï"), "Ünï");
    }

    #[test]
    fn nick_rules() {
        for ok in ["alice", "A", "[bot]", "`x", "_under", "a-1", "x{}|^"] {
            assert!(valid_nick(ok, 9), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "-a",
            "a b",
            "a,b",
            "a!b",
            "a@b",
            "#chan",
            "é",
            "toolongnick",
        ] {
            assert!(!valid_nick(bad, 9), "{bad}");
        }
        assert!(valid_nick("toolongnick", 11));
    }

    #[test]
    fn channel_rules() {
        for ok in ["#a", "#rust-lang", "#ünï", "#a.b"] {
            assert!(valid_channel(ok, 50), "{ok}");
        }
        for bad in ["", "#", "a", "&a", "#a b", "#a,b", "#a\x07", "#a:b"] {
            assert!(!valid_channel(bad, 50), "{bad:?}");
        }
        assert!(valid_channel("#abcd", 5));
        assert!(!valid_channel("#abcde", 5));
    }

    #[test]
    fn server_time_is_utc_with_milliseconds() {
        assert_eq!(server_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2026-12-02T08:00:00.123Z is 1_796_198_400_123 ms after the epoch.
        let t = UNIX_EPOCH + Duration::from_millis(1_796_198_400_123);
        assert_eq!(server_time(t), "2026-12-02T08:00:00.123Z");
        // 2024-02-29 (a leap day) 23:59:59.999.
        let leap = UNIX_EPOCH + Duration::from_millis(1_709_251_199_999);
        assert_eq!(server_time(leap), "2024-02-29T23:59:59.999Z");
        assert_eq!(
            server_time(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
