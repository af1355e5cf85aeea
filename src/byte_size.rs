//! Sizes in settings (`500MiB`, `2 GiB`, `100KB`, `1048576`), parsed where they are read: a
//! bad one is refused by clap with the flag's name, or by the TOML reader with the line.

use std::str::FromStr;

/// A number of bytes, as an operator writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n << 20)
    }

    pub const fn gib(n: u64) -> ByteSize {
        ByteSize(n << 30)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
        let (number, unit) = (s[..split].trim(), s[split..].trim());
        let n: f64 = number.parse().map_err(|_| format!("invalid size `{s}`; write e.g. 500MiB or 20GB"))?;
        let factor: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            "t" | "tb" => 1000u64.pow(4),
            "tib" => 1 << 40,
            _ => return Err(format!("unknown unit in `{s}`; use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)")),
        };
        Ok(ByteSize((n * factor as f64) as u64))
    }
}

/// In the TOML file: a string with a unit, or a plain number of bytes.
impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn sizes_parse() {
        let parse = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(parse("500MiB").unwrap(), 500 << 20);
        assert_eq!(parse("2 GB").unwrap(), 2_000_000_000);
        assert_eq!(parse("1024").unwrap(), 1024);
        assert!(parse("lots").is_err());
        assert!(parse("5 parsecs").is_err());
        #[derive(serde::Deserialize)]
        struct File {
            a: ByteSize,
            b: ByteSize,
        }
        let f: File = toml::from_str("a = \"4 KiB\"\nb = 7").unwrap();
        assert_eq!((f.a.0, f.b.0), (4096, 7));
        let err = toml::from_str::<File>("a = \"4 parsecs\"\nb = 1").err().unwrap().to_string();
        assert!(err.contains("unknown unit") && err.contains("line 1"), "{err}");
    }
}
