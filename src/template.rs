//! Templates with `{tag}` placeholders (DESIGN section 5), parsed once at config load so that
//! an unknown tag is a start-up error, and rendered with escaping for the place the text goes
//! (URL, XML, or plain where an encoder such as a form or JSON serializer escapes later).

use std::fmt::Write;

/// A placeholder a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// The phone number as the gateway wants it.
    Phone,
    /// The message content (the OTP SMS text, or a notification's text).
    Otp,
    /// The same as `Otp`.
    Message,
    /// The phone with most digits hidden, for prompts and notifications.
    PhoneMasked,
    /// Notifications: the user name.
    User,
    /// Notifications: the token serial.
    Serial,
    /// Notifications: the RADIUS client (or Calling-Station-Id) of the login.
    Client,
    /// Notifications: when it happened (RFC 3339, UTC).
    Time,
    /// Notifications: the token's fail counter.
    Failures,
}

impl Tag {
    fn parse(name: &str) -> Option<Tag> {
        match name {
            "phone" => Some(Tag::Phone),
            "otp" => Some(Tag::Otp),
            "message" => Some(Tag::Message),
            "phone_masked" => Some(Tag::PhoneMasked),
            "user" => Some(Tag::User),
            "serial" => Some(Tag::Serial),
            "client" => Some(Tag::Client),
            "time" => Some(Tag::Time),
            "failures" => Some(Tag::Failures),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tag::Phone => "phone",
            Tag::Otp => "otp",
            Tag::Message => "message",
            Tag::PhoneMasked => "phone_masked",
            Tag::User => "user",
            Tag::Serial => "serial",
            Tag::Client => "client",
            Tag::Time => "time",
            Tag::Failures => "failures",
        }
    }
}

/// How rendered values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As is: the caller's encoder (form, JSON) escapes the whole value.
    None,
    /// Percent-encoded for a URL (RFC 3986 unreserved characters stay).
    Url,
    /// XML character data and attribute values.
    Xml,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Tag(Tag),
}

/// A parsed template. `{{` and `}}` stand for literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `text`, allowing only the tags in `allowed`.
    pub fn parse(text: &str, allowed: &[Tag]) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("{{") {
                literal.push('{');
                rest = after;
            } else if let Some(after) = tail.strip_prefix("}}") {
                literal.push('}');
                rest = after;
            } else if let Some(after) = tail.strip_prefix('{') {
                let end = after
                    .find('}')
                    .ok_or_else(|| format!("unclosed '{{' in \"{text}\""))?;
                let name = &after[..end];
                let tag = Tag::parse(name)
                    .filter(|t| allowed.contains(t))
                    .ok_or_else(|| {
                        format!("unknown tag {{{name}}}; allowed here: {}", list(allowed))
                    })?;
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Tag(tag));
                rest = &after[end + 1..];
            } else {
                return Err(format!("lone '}}' in \"{text}\"; write '}}}}' for a brace"));
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// A template without tags.
    pub fn literal(text: &str) -> Template {
        Template {
            pieces: vec![Piece::Text(text.to_string())],
        }
    }

    /// Renders with `value` for each tag, escaping values (not the literal text).
    pub fn render(&self, value: impl Fn(Tag) -> String, escape: Escape) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Tag(tag) => push_escaped(&mut out, &value(*tag), escape),
            }
        }
        out
    }
}

fn list(tags: &[Tag]) -> String {
    if tags.is_empty() {
        return "none".into();
    }
    tags.iter()
        .map(|t| format!("{{{}}}", t.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Appends `value` escaped for `escape`.
pub fn push_escaped(out: &mut String, value: &str, escape: Escape) {
    match escape {
        Escape::None => out.push_str(value),
        Escape::Url => {
            for byte in value.bytes() {
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(char::from(byte));
                } else {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "%{byte:02X}");
                }
            }
        }
        Escape::Xml => {
            for c in value.chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '"' => out.push_str("&quot;"),
                    '\'' => out.push_str("&apos;"),
                    c => out.push(c),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Tag] = &[Tag::Phone, Tag::Otp, Tag::Message];

    fn values(tag: Tag) -> String {
        match tag {
            Tag::Phone => "+49 170/1234".into(),
            Tag::Otp | Tag::Message => "Code: 123456 & <more>".into(),
            _ => "other".into(),
        }
    }

    #[test]
    fn renders_tags_and_literal_braces() {
        let t = Template::parse("{{x}} to {phone}: {otp}", ALL).unwrap();
        assert_eq!(
            t.render(values, Escape::None),
            "{x} to +49 170/1234: Code: 123456 & <more>"
        );
    }

    #[test]
    fn escapes_values_for_url_and_xml_but_not_literal_text() {
        let t = Template::parse("http://h/send?to={phone}&text={message}", ALL).unwrap();
        assert_eq!(
            t.render(values, Escape::Url),
            "http://h/send?to=%2B49%20170%2F1234&text=Code%3A%20123456%20%26%20%3Cmore%3E"
        );
        let t = Template::parse("<v>{otp}</v>", ALL).unwrap();
        assert_eq!(
            t.render(values, Escape::Xml),
            "<v>Code: 123456 &amp; &lt;more&gt;</v>"
        );
    }

    #[test]
    fn unknown_or_disallowed_tags_and_stray_braces_are_errors() {
        assert!(
            Template::parse("{pin}", ALL)
                .unwrap_err()
                .contains("unknown tag {pin}")
        );
        assert!(Template::parse("{phone_masked}", ALL).is_err());
        assert!(
            Template::parse("{otp", ALL)
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(Template::parse("a}b", ALL).unwrap_err().contains("lone"));
    }

    #[test]
    fn multibyte_text_survives() {
        let t = Template::parse("Ihr Code für München: {otp}", ALL).unwrap();
        assert_eq!(
            t.render(|_| "1".into(), Escape::None),
            "Ihr Code für München: 1"
        );
    }
}
