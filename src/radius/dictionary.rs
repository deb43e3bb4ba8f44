//! Run-time dictionaries in the FreeRADIUS format: ATTRIBUTE, VALUE, VENDOR,
//! BEGIN-VENDOR/END-VENDOR and $INCLUDE; types string, octets, integer, ipaddr, ipv6addr,
//! ipv6prefix, date (and byte, short, signed, integer64 as integers); the `has_tag` and
//! `encrypt=` flags. Errors name file and line.
//!
//! The dictionary turns names into wire attributes (`encode`, for configured reply
//! attributes) and wire attributes into names (`describe`, for logs and the audit trail).

use std::collections::HashMap;
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::packet::{Attribute, MAX_ATTRIBUTE_VALUE_LEN};

/// An attribute ready for the wire: type and value (a VSA is type 26 with its vendor
/// header in the value).
pub type WireAttribute = (u8, Vec<u8>);

/// Vendor-Specific (RFC 2865 section 5.26).
pub const VENDOR_SPECIFIC: u8 = 26;
/// Deepest $INCLUDE nesting accepted, against include loops.
const MAX_INCLUDE_DEPTH: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeType {
    String,
    Octets,
    /// byte, short, integer: `width` octets on the wire.
    Integer {
        width: u8,
    },
    Integer64,
    Signed,
    IpAddr,
    Ipv6Addr,
    Ipv6Prefix,
    Date,
}

impl AttributeType {
    fn parse(word: &str) -> Option<AttributeType> {
        Some(match word {
            "string" | "text" => AttributeType::String,
            "octets" | "abinary" | "ether" | "ifid" => AttributeType::Octets,
            "integer" => AttributeType::Integer { width: 4 },
            "short" => AttributeType::Integer { width: 2 },
            "byte" => AttributeType::Integer { width: 1 },
            "integer64" => AttributeType::Integer64,
            "signed" => AttributeType::Signed,
            "ipaddr" => AttributeType::IpAddr,
            "ipv6addr" => AttributeType::Ipv6Addr,
            "ipv6prefix" => AttributeType::Ipv6Prefix,
            "date" => AttributeType::Date,
            _ => return None,
        })
    }
}

/// One ATTRIBUTE line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDef {
    pub name: String,
    /// Vendor id for a VSA; None for a standard attribute.
    pub vendor: Option<u32>,
    pub number: u8,
    pub kind: AttributeType,
    pub has_tag: bool,
    /// `encrypt=N`: the value is hidden on the wire (1 User-Password, 2 Tunnel-Password).
    pub encrypt: u8,
}

impl AttributeDef {
    /// Whether the value must never be logged.
    pub fn is_secret(&self) -> bool {
        self.encrypt != 0 || (self.vendor.is_none() && matches!(self.number, 2 | 3))
    }
}

/// Why a dictionary could not be read: `file:line: problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct DictionaryError {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

#[derive(Debug, Default, Clone)]
pub struct Dictionary {
    by_name: HashMap<String, AttributeDef>,
    by_number: HashMap<(Option<u32>, u8), String>,
    vendors: HashMap<String, u32>,
    /// (attribute name, value name) -> number, and back.
    values: HashMap<(String, String), u64>,
    value_names: HashMap<(String, u64), String>,
}

impl Dictionary {
    /// Loads `DIR/dictionary` and what it includes.
    pub fn load_dir(dir: &Path) -> Result<Dictionary, DictionaryError> {
        let mut dictionary = Dictionary::default();
        dictionary.load_file(&dir.join("dictionary"), 0)?;
        Ok(dictionary)
    }

    /// Parses dictionary text; `$INCLUDE` is resolved against `base`.
    pub fn parse(text: &str, name: &str, base: &Path) -> Result<Dictionary, DictionaryError> {
        let mut dictionary = Dictionary::default();
        dictionary.parse_text(text, name, base, 0)?;
        Ok(dictionary)
    }

    fn load_file(&mut self, path: &Path, depth: usize) -> Result<(), DictionaryError> {
        let text = std::fs::read_to_string(path).map_err(|e| DictionaryError {
            file: path.display().to_string(),
            line: 0,
            problem: format!("cannot read: {e}"),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        self.parse_text(&text, &path.display().to_string(), &base, depth)
    }

    fn parse_text(
        &mut self,
        text: &str,
        file: &str,
        base: &Path,
        depth: usize,
    ) -> Result<(), DictionaryError> {
        let mut vendor: Option<u32> = None;
        for (index, raw) in text.lines().enumerate() {
            let error = |problem: String| DictionaryError {
                file: file.to_string(),
                line: index + 1,
                problem,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(keyword) = words.first() else {
                continue;
            };
            match *keyword {
                "$INCLUDE" | "$INCLUDE-" => {
                    let target = words
                        .get(1)
                        .ok_or_else(|| error("$INCLUDE needs a file".into()))?;
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(error("$INCLUDE nested too deep (a loop?)".into()));
                    }
                    let path = resolve(base, target);
                    if *keyword == "$INCLUDE-" && !path.exists() {
                        continue;
                    }
                    self.load_file(&path, depth + 1)?;
                }
                "VENDOR" => {
                    let (name, number) = match words[..] {
                        [_, name, number, ..] => (name, number),
                        _ => return Err(error("VENDOR needs a name and a number".into())),
                    };
                    let number: u32 = number
                        .parse()
                        .map_err(|_| error(format!("'{number}' is not a vendor number")))?;
                    if let Some(format) = words.get(3).filter(|f| !matches!(**f, "format=1,1")) {
                        return Err(error(format!(
                            "vendor {format} is not supported (only 1-octet type and length)"
                        )));
                    }
                    self.vendors.insert(name.to_string(), number);
                }
                "BEGIN-VENDOR" => {
                    let name = words
                        .get(1)
                        .ok_or_else(|| error("BEGIN-VENDOR needs a vendor".into()))?;
                    vendor = Some(
                        *self
                            .vendors
                            .get(*name)
                            .ok_or_else(|| error(format!("unknown vendor '{name}'")))?,
                    );
                }
                "END-VENDOR" => vendor = None,
                "ATTRIBUTE" => {
                    let def = parse_attribute(&words, vendor).map_err(error)?;
                    self.by_number
                        .insert((def.vendor, def.number), def.name.clone());
                    self.by_name.insert(def.name.clone(), def);
                }
                "VALUE" => {
                    let (attribute, name, number) = match words[..] {
                        [_, attribute, name, number] => (attribute, name, number),
                        _ => {
                            return Err(error(
                                "VALUE needs an attribute, a name and a number".into(),
                            ));
                        }
                    };
                    let number = parse_number(number)
                        .ok_or_else(|| error(format!("'{number}' is not a number")))?;
                    self.values
                        .insert((attribute.to_string(), name.to_string()), number);
                    self.value_names
                        .entry((attribute.to_string(), number))
                        .or_insert_with(|| name.to_string());
                }
                "PROTOCOL" | "BEGIN-PROTOCOL" | "END-PROTOCOL" | "FLAGS" => {}
                other => return Err(error(format!("unknown keyword '{other}'"))),
            }
        }
        Ok(())
    }

    pub fn attribute(&self, name: &str) -> Option<&AttributeDef> {
        self.by_name.get(name)
    }

    pub fn vendor(&self, name: &str) -> Option<u32> {
        self.vendors.get(name).copied()
    }

    /// Encodes `Name=value` or `Name:TAG=value` into one wire attribute (a VSA is wrapped in
    /// Vendor-Specific). The value is checked against the attribute's type.
    pub fn encode(&self, text: &str) -> Result<WireAttribute, String> {
        let (left, value) = text
            .split_once('=')
            .ok_or_else(|| format!("'{text}' is not Name=value"))?;
        let (name, tag) = match left.trim().split_once(':') {
            Some((name, tag)) => {
                let tag: u8 = tag
                    .parse()
                    .ok()
                    .filter(|t| (1..=0x1f).contains(t))
                    .ok_or_else(|| format!("tag '{tag}' is not 1-31"))?;
                (name, Some(tag))
            }
            None => (left.trim(), None),
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let def = self
            .attribute(name)
            .ok_or_else(|| format!("unknown attribute '{name}'"))?;
        if def.encrypt != 0 {
            return Err(format!(
                "{name} is encrypted on the wire (encrypt={}); otpgate does not send it",
                def.encrypt
            ));
        }
        if tag.is_some() && !def.has_tag {
            return Err(format!("{name} takes no tag"));
        }
        let mut data = self.encode_value(def, value)?;
        if def.has_tag {
            let tag = tag.unwrap_or(0);
            match def.kind {
                // RFC 2868 section 3.1: a tagged integer is one tag octet and three value octets.
                AttributeType::Integer { width: 4 } => {
                    if data[0] != 0 {
                        return Err(format!("{name}: a tagged integer must fit in 3 octets"));
                    }
                    data[0] = tag;
                }
                // A tagged string: the tag octet comes first only when set.
                _ if tag != 0 => data.insert(0, tag),
                _ => {}
            }
        }
        if data.len() > MAX_ATTRIBUTE_VALUE_LEN - if def.vendor.is_some() { 6 } else { 0 } {
            return Err(format!(
                "{name}: the value is longer than one attribute can carry (253 octets)"
            ));
        }
        match def.vendor {
            None => Ok((def.number, data)),
            Some(vendor) => {
                let mut vsa = vendor.to_be_bytes().to_vec();
                vsa.push(def.number);
                // Bounded above: at most 247 octets of data.
                vsa.push((data.len() + 2) as u8);
                vsa.extend(data);
                Ok((VENDOR_SPECIFIC, vsa))
            }
        }
    }

    fn encode_value(&self, def: &AttributeDef, value: &str) -> Result<Vec<u8>, String> {
        let name = &def.name;
        let bad = |what: &str| format!("{name}: '{value}' is not {what}");
        Ok(match def.kind {
            AttributeType::String => value.as_bytes().to_vec(),
            AttributeType::Octets => {
                let hex_digits = value
                    .strip_prefix("0x")
                    .ok_or_else(|| bad("hex octets (0x...)"))?;
                hex::decode(hex_digits).map_err(|_| bad("hex octets (0x...)"))?
            }
            AttributeType::Integer { width } => {
                let number = match parse_number(value) {
                    Some(n) => n,
                    None => *self
                        .values
                        .get(&(name.clone(), value.to_string()))
                        .ok_or_else(|| bad("a number or a VALUE name"))?,
                };
                let bytes = number.to_be_bytes();
                let width = usize::from(width);
                if bytes[..8 - width].iter().any(|b| *b != 0) {
                    return Err(bad(&format!("a {width}-octet integer")));
                }
                bytes[8 - width..].to_vec()
            }
            AttributeType::Integer64 => parse_number(value)
                .ok_or_else(|| bad("a number"))?
                .to_be_bytes()
                .to_vec(),
            AttributeType::Signed => value
                .parse::<i32>()
                .map_err(|_| bad("a signed 32-bit number"))?
                .to_be_bytes()
                .to_vec(),
            AttributeType::IpAddr => value
                .parse::<Ipv4Addr>()
                .map_err(|_| bad("an IPv4 address"))?
                .octets()
                .to_vec(),
            AttributeType::Ipv6Addr => value
                .parse::<Ipv6Addr>()
                .map_err(|_| bad("an IPv6 address"))?
                .octets()
                .to_vec(),
            AttributeType::Ipv6Prefix => {
                let (address, length) = value
                    .split_once('/')
                    .ok_or_else(|| bad("an IPv6 prefix (addr/len)"))?;
                let address: Ipv6Addr = address
                    .parse()
                    .map_err(|_| bad("an IPv6 prefix (addr/len)"))?;
                let length: u8 = length
                    .parse()
                    .ok()
                    .filter(|l| *l <= 128)
                    .ok_or_else(|| bad("an IPv6 prefix (addr/len)"))?;
                // RFC 3162 section 2.3: reserved, length, then the prefix's significant octets.
                let octets = usize::from(length).div_ceil(8);
                let mut data = vec![0, length];
                data.extend_from_slice(&address.octets()[..octets]);
                data
            }
            AttributeType::Date => {
                let seconds = match parse_number(value) {
                    Some(n) => n,
                    None => humantime::parse_rfc3339(value)
                        .map_err(|_| bad("seconds since 1970 or an RFC 3339 time"))?
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_err(|_| bad("a time after 1970"))?
                        .as_secs(),
                };
                u32::try_from(seconds)
                    .map_err(|_| bad("a date before 2106"))?
                    .to_be_bytes()
                    .to_vec()
            }
        })
    }

    /// `Name = value` lines for a request's attributes, secrets redacted, VSAs by vendor
    /// name where known, unknown attributes as `Attr-N = 0x...`.
    pub fn describe(&self, attributes: &[Attribute<'_>]) -> Vec<String> {
        let mut lines = Vec::new();
        for attribute in attributes {
            if attribute.kind == VENDOR_SPECIFIC
                && let Some(described) = self.describe_vsa(attribute.value)
            {
                lines.extend(described);
                continue;
            }
            lines.push(self.describe_one(None, attribute.kind, attribute.value));
        }
        lines
    }

    fn describe_vsa(&self, value: &[u8]) -> Option<Vec<String>> {
        let vendor = u32::from_be_bytes(value.get(..4)?.try_into().ok()?);
        let mut rest = &value[4..];
        let mut lines = Vec::new();
        while !rest.is_empty() {
            let [number, length, ..] = *rest else {
                return None;
            };
            let data = rest.get(2..usize::from(length))?;
            lines.push(self.describe_one(Some(vendor), number, data));
            rest = &rest[usize::from(length)..];
        }
        Some(lines)
    }

    fn describe_one(&self, vendor: Option<u32>, number: u8, data: &[u8]) -> String {
        let Some(name) = self.by_number.get(&(vendor, number)) else {
            let label = match vendor {
                Some(v) => format!("Vendor-{v}-Attr-{number}"),
                None => format!("Attr-{number}"),
            };
            return format!("{label} = 0x{}", hex::encode(data));
        };
        let def = &self.by_name[name];
        if def.is_secret() {
            return format!("{name} = [redacted]");
        }
        // RFC 2868 section 3: tagged integers always start with the tag; tagged strings do
        // when their first octet is 0x01-0x1F.
        let (tag, data) = match (def.has_tag, def.kind, data.split_first()) {
            (true, AttributeType::Integer { .. }, Some((tag, rest))) => (Some(*tag), rest),
            (true, _, Some((tag, rest))) if *tag <= 0x1f => (Some(*tag), rest),
            _ => (None, data),
        };
        let shown = self.show_value(def, data);
        match tag {
            Some(tag) if tag != 0 => format!("{name}:{tag} = {shown}"),
            _ => format!("{name} = {shown}"),
        }
    }

    fn show_value(&self, def: &AttributeDef, data: &[u8]) -> String {
        let hex = || format!("0x{}", hex::encode(data));
        let number = || -> Option<u64> {
            (data.len() <= 8 && !data.is_empty())
                .then(|| data.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
        };
        match def.kind {
            AttributeType::String => match std::str::from_utf8(data) {
                Ok(text) if !text.chars().any(char::is_control) => format!("\"{text}\""),
                _ => hex(),
            },
            AttributeType::Integer { .. } | AttributeType::Integer64 | AttributeType::Date => {
                match number() {
                    Some(n) => self
                        .value_names
                        .get(&(def.name.clone(), n))
                        .cloned()
                        .unwrap_or_else(|| n.to_string()),
                    None => hex(),
                }
            }
            AttributeType::IpAddr => <[u8; 4]>::try_from(data)
                .map(|o| Ipv4Addr::from(o).to_string())
                .unwrap_or_else(|_| hex()),
            AttributeType::Ipv6Addr => <[u8; 16]>::try_from(data)
                .map(|o| Ipv6Addr::from(o).to_string())
                .unwrap_or_else(|_| hex()),
            _ => hex(),
        }
    }
}

fn resolve(base: &Path, target: &str) -> PathBuf {
    let path = Path::new(target);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex_digits) => u64::from_str_radix(hex_digits, 16).ok(),
        None => text.parse().ok(),
    }
}

fn parse_attribute(words: &[&str], vendor: Option<u32>) -> Result<AttributeDef, String> {
    let (name, number, kind) = match words {
        [_, name, number, kind, ..] => (*name, *number, *kind),
        _ => return Err("ATTRIBUTE needs a name, a number and a type".into()),
    };
    let number = parse_number(number)
        .and_then(|n| u8::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("attribute number '{number}' is not 1-255"))?;
    // Types may carry a length, e.g. octets[16]; the length is not needed here.
    let base_type = kind.split('[').next().unwrap_or(kind);
    let kind = AttributeType::parse(base_type).ok_or_else(|| format!("unknown type '{kind}'"))?;
    let mut def = AttributeDef {
        name: name.to_string(),
        vendor,
        number,
        kind,
        has_tag: false,
        encrypt: 0,
    };
    let mut flags = String::new();
    for word in &words[4..] {
        let _ = write!(flags, "{word},");
    }
    for flag in flags.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        match flag.split_once('=') {
            None if flag == "has_tag" => def.has_tag = true,
            None if matches!(flag, "concat" | "virtual" | "array") => {}
            Some(("encrypt", n)) => {
                def.encrypt = n.parse().map_err(|_| format!("bad flag '{flag}'"))?
            }
            _ => return Err(format!("unknown flag '{flag}'")),
        }
    }
    Ok(def)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Dictionary {
        Dictionary::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("dictionaries")).unwrap()
    }

    #[test]
    fn encodes_standard_attributes_by_type() {
        let d = shipped();
        assert_eq!(
            d.encode("Filter-Id=vpn-staff").unwrap(),
            (11, b"vpn-staff".to_vec())
        );
        assert_eq!(
            d.encode("Framed-IP-Address=10.11.12.13").unwrap(),
            (8, vec![10, 11, 12, 13])
        );
        assert_eq!(
            d.encode("Session-Timeout=3600").unwrap(),
            (27, 3600u32.to_be_bytes().to_vec())
        );
        assert_eq!(
            d.encode("Service-Type=Framed-User").unwrap(),
            (6, vec![0, 0, 0, 2])
        );
        assert_eq!(d.encode("Class=0x0102ff").unwrap(), (25, vec![1, 2, 0xff]));
        assert_eq!(
            d.encode("Framed-IPv6-Prefix=2001:db8::/32").unwrap(),
            (97, vec![0, 32, 0x20, 0x01, 0x0d, 0xb8])
        );
    }

    #[test]
    fn encodes_tunnel_attributes_with_tags_per_rfc_2868() {
        let d = shipped();
        // VLAN 13: Tunnel-Type = VLAN (13), Tunnel-Medium-Type = IEEE-802 (6).
        assert_eq!(
            d.encode("Tunnel-Type:1=VLAN").unwrap(),
            (64, vec![1, 0, 0, 13])
        );
        assert_eq!(
            d.encode("Tunnel-Medium-Type:1=IEEE-802").unwrap(),
            (65, vec![1, 0, 0, 6])
        );
        assert_eq!(
            d.encode("Tunnel-Private-Group-Id:1=13").unwrap(),
            (81, vec![1, b'1', b'3'])
        );
        assert_eq!(
            d.encode("Tunnel-Type=VLAN").unwrap(),
            (64, vec![0, 0, 0, 13])
        );
        assert!(
            d.encode("Filter-Id:1=x")
                .unwrap_err()
                .contains("takes no tag")
        );
        assert!(d.encode("Tunnel-Type:40=VLAN").is_err());
    }

    #[test]
    fn wraps_vendor_attributes_in_vendor_specific() {
        let d = shipped();
        let (kind, value) = d.encode("Cisco-AVPair=shell:priv-lvl=15").unwrap();
        assert_eq!(kind, 26);
        assert_eq!(&value[..6], &[0, 0, 0, 9, 1, 2 + 17]);
        assert_eq!(&value[6..], b"shell:priv-lvl=15");
        let (_, value) = d.encode("Fortinet-Group-Name=admins").unwrap();
        assert_eq!(&value[..6], &[0, 0, 0x30, 0x44, 1, 8]);
    }

    #[test]
    fn refuses_bad_values_long_values_and_encrypted_attributes() {
        let d = shipped();
        assert!(
            d.encode("Framed-IP-Address=10.0.0.300")
                .unwrap_err()
                .contains("not an IPv4 address")
        );
        assert!(
            d.encode("Session-Timeout=soon")
                .unwrap_err()
                .contains("VALUE name")
        );
        assert!(
            d.encode("No-Such-Attribute=1")
                .unwrap_err()
                .contains("unknown attribute")
        );
        assert!(
            d.encode(&format!("Filter-Id={}", "x".repeat(254)))
                .unwrap_err()
                .contains("253")
        );
        assert!(
            d.encode(&format!("Cisco-AVPair={}", "x".repeat(248)))
                .is_err()
        );
        assert!(
            d.encode("Tunnel-Password:1=secret")
                .unwrap_err()
                .contains("encrypt")
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = Dictionary::parse(
            "ATTRIBUTE A 1 string\nATTRIBUTE B 2 nonsense\n",
            "dict.test",
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "dict.test:2: unknown type 'nonsense'");
        let err = Dictionary::parse("BEGIN-VENDOR Nobody\n", "d", Path::new(".")).unwrap_err();
        assert_eq!(err.to_string(), "d:1: unknown vendor 'Nobody'");
    }

    #[test]
    fn describes_attributes_by_name_and_redacts_passwords() {
        let d = shipped();
        let vsa = d.encode("Cisco-AVPair=shell:priv-lvl=15").unwrap().1;
        let attributes = [
            Attribute {
                kind: 1,
                value: b"alice",
            },
            Attribute {
                kind: 2,
                value: &[1; 16],
            },
            Attribute {
                kind: 4,
                value: &[192, 0, 2, 7],
            },
            Attribute {
                kind: 6,
                value: &[0, 0, 0, 2],
            },
            Attribute {
                kind: 26,
                value: &vsa,
            },
            Attribute {
                kind: 64,
                value: &[1, 0, 0, 13],
            },
            Attribute {
                kind: 250,
                value: &[9],
            },
        ];
        assert_eq!(
            d.describe(&attributes),
            vec![
                "User-Name = \"alice\"",
                "User-Password = [redacted]",
                "NAS-IP-Address = 192.0.2.7",
                "Service-Type = Framed-User",
                "Cisco-AVPair = \"shell:priv-lvl=15\"",
                "Tunnel-Type:1 = VLAN",
                "Attr-250 = 0x09",
            ]
        );
    }
}
