//! A device's identity for reloads: a SHA-256 of its whole `[[device]]` table (defaults written in),
//! in a canonical form. A reload restarts exactly the devices whose fingerprint changed.
//!
//! Why a digest and not the table: the agent keeps one per running device for its whole life, and a
//! parsed `toml::Table` costs about 600 bytes per tag (12 MiB at 10,000 tags, two copies, most of the
//! agent's idle memory); the digest is 32 bytes per device.

use std::collections::BTreeMap;

use ring::digest::{Context, SHA256};

/// SHA-256 of a `[[device]]` table in canonical form (keys in order, every value typed).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DeviceFingerprint([u8; 32]);

impl std::fmt::Debug for DeviceFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl DeviceFingerprint {
    pub fn of(table: &toml::Table) -> DeviceFingerprint {
        let mut ctx = Context::new(&SHA256);
        feed_table(&mut ctx, table);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        DeviceFingerprint(out)
    }
}

/// Each enabled device's fingerprint by name.
pub fn device_fingerprints(root: &toml::Table) -> BTreeMap<String, DeviceFingerprint> {
    let Some(toml::Value::Array(items)) = root.get("device") else {
        return BTreeMap::new();
    };
    items
        .iter()
        .filter_map(|d| d.as_table())
        .filter(|d| d.get("enabled").and_then(|e| e.as_bool()) != Some(false))
        .filter_map(|d| {
            Some((
                d.get("name")?.as_str()?.to_string(),
                DeviceFingerprint::of(d),
            ))
        })
        .collect()
}

// Every item is written with a type byte and, where its length varies, its length first, so two
// different tables can never produce the same byte stream.
fn feed_bytes(ctx: &mut Context, bytes: &[u8]) {
    ctx.update(&(bytes.len() as u64).to_le_bytes());
    ctx.update(bytes);
}

fn feed_table(ctx: &mut Context, table: &toml::Table) {
    // Sorted keys: the digest does not depend on the order a map keeps.
    let mut keys: Vec<&String> = table.keys().collect();
    keys.sort();
    ctx.update(b"t");
    ctx.update(&(keys.len() as u64).to_le_bytes());
    for k in keys {
        feed_bytes(ctx, k.as_bytes());
        if let Some(v) = table.get(k) {
            feed_value(ctx, v);
        }
    }
}

fn feed_value(ctx: &mut Context, value: &toml::Value) {
    match value {
        toml::Value::String(s) => {
            ctx.update(b"s");
            feed_bytes(ctx, s.as_bytes());
        }
        toml::Value::Integer(i) => {
            ctx.update(b"i");
            ctx.update(&i.to_le_bytes());
        }
        toml::Value::Float(f) => {
            ctx.update(b"f");
            ctx.update(&f.to_bits().to_le_bytes());
        }
        toml::Value::Boolean(b) => ctx.update(if *b { b"1" } else { b"0" }),
        toml::Value::Datetime(d) => {
            ctx.update(b"d");
            feed_bytes(ctx, d.to_string().as_bytes());
        }
        toml::Value::Array(items) => {
            ctx.update(b"a");
            ctx.update(&(items.len() as u64).to_le_bytes());
            for v in items {
                feed_value(ctx, v);
            }
        }
        toml::Value::Table(t) => feed_table(ctx, t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(text: &str) -> DeviceFingerprint {
        DeviceFingerprint::of(&text.parse::<toml::Table>().unwrap())
    }

    #[test]
    fn the_same_table_written_differently_has_one_fingerprint() {
        assert_eq!(
            fp("name = \"a\"\ninterval = \"1s\"\n[[tag]]\nname = \"x\"\n"),
            fp("interval = \"1s\"\nname = \"a\"\ntag = [{ name = \"x\" }]\n")
        );
    }

    #[test]
    fn any_change_changes_the_fingerprint() {
        let base = "name = \"a\"\nn = 1\nf = 1.5\nb = true\n[[tag]]\nname = \"x\"\n";
        let changed = [
            "name = \"b\"\nn = 1\nf = 1.5\nb = true\n[[tag]]\nname = \"x\"\n",
            "name = \"a\"\nn = 2\nf = 1.5\nb = true\n[[tag]]\nname = \"x\"\n",
            "name = \"a\"\nn = 1\nf = 1.25\nb = true\n[[tag]]\nname = \"x\"\n",
            "name = \"a\"\nn = 1\nf = 1.5\nb = false\n[[tag]]\nname = \"x\"\n",
            "name = \"a\"\nn = 1\nf = 1.5\nb = true\n[[tag]]\nname = \"y\"\n",
            "name = \"a\"\nn = 1\nf = 1.5\nb = true\n[[tag]]\nname = \"x\"\n[[tag]]\nname = \"x\"\n",
            // The same text in another type.
            "name = \"a\"\nn = \"1\"\nf = 1.5\nb = true\n[[tag]]\nname = \"x\"\n",
            "name = \"a\"\nn = 1\nf = 1.5\nb = true\ntag = []\n",
        ];
        for c in changed {
            assert_ne!(fp(base), fp(c), "{c}");
        }
        // Keys and values cannot run into each other.
        assert_ne!(fp("ab = \"c\"\n"), fp("a = \"bc\"\n"));
    }
}
