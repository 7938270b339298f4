//! The files a config names (passwords, TLS material) are read here the way `run` reads them, so that
//! `check` fails on a file `run` could not use: missing, unreadable by this user, not a regular file,
//! empty, or not the PEM it should be. A secret readable by every user is a warning.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::checker::Checker;
use super::read;
use super::types::{BrokerUrl, MqttConfig};

/// Largest password file read.
const MAX_PASSWORD_FILE: u64 = 64 * 1024;
/// Largest certificate or key file read.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// Where Debian, Ubuntu and Alpine keep the system CA bundle (the forwarder's list).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

impl Checker<'_> {
    /// A password file: readable, a regular file, a non-empty first line; a warning if every user may
    /// read it.
    pub(super) fn check_password_file(&mut self, key: &str, path: &Path) {
        match read::bounded_text(path, MAX_PASSWORD_FILE) {
            Ok(text) if text.lines().next().unwrap_or("").is_empty() => self.push(
                key,
                format!("{}: the first line (the password) is empty", path.display()),
            ),
            Ok(_) => self.warn_if_world_readable(key, path),
            Err(e) => self.push(key, format!("{} {e}", path.display())),
        }
    }

    fn warn_if_world_readable(&mut self, key: &str, path: &Path) {
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o004 != 0
        {
            self.warn(
                key,
                format!(
                    "{} is readable by every user; restrict it (chmod 640, group lineside)",
                    path.display()
                ),
            );
        }
    }

    fn pem(&mut self, key: &str, path: &Path) -> Option<Vec<u8>> {
        match read::bounded(path, MAX_PEM_FILE) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.push(key, format!("{} {e}", path.display()));
                None
            }
        }
    }

    /// The broker password and TLS files, as the forwarder loads them at start.
    pub(super) fn check_mqtt_files(&mut self, mqtt: &MqttConfig) {
        if let Some(path) = &mqtt.password_file {
            self.check_password_file("mqtt.password_file", path);
        }
        let tls = BrokerUrl::parse(&mqtt.url).is_ok_and(|u| u.tls);
        if !tls {
            return;
        }
        let (key, ca) = match &mqtt.ca_file {
            Some(p) => ("mqtt.ca_file", Some(p.clone())),
            None => (
                "mqtt.url",
                SYSTEM_CA_BUNDLES
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists()),
            ),
        };
        let Some(ca) = ca else {
            self.push(key, "no mqtt.ca_file set and no system CA bundle found");
            return;
        };
        let mut roots = rustls::RootCertStore::empty();
        if let Some(bytes) = self.pem(key, &ca) {
            for cert in CertificateDer::pem_slice_iter(&bytes) {
                match cert
                    .map_err(|e| e.to_string())
                    .and_then(|c| roots.add(c).map_err(|e| e.to_string()))
                {
                    Ok(()) => {}
                    Err(e) => {
                        self.push(
                            key,
                            format!("{}: invalid CA certificate: {e}", ca.display()),
                        );
                        return;
                    }
                }
            }
            if roots.is_empty() {
                self.push(key, format!("{} holds no certificate", ca.display()));
                return;
            }
        }
        let (Some(cert), Some(key_file)) = (&mqtt.client_cert, &mqtt.client_key) else {
            return;
        };
        let chain = self
            .pem("mqtt.client_cert", cert)
            .map(|bytes| CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>());
        let private = self
            .pem("mqtt.client_key", key_file)
            .map(|bytes| PrivateKeyDer::from_pem_slice(&bytes));
        self.warn_if_world_readable("mqtt.client_key", key_file);
        let chain = match chain {
            Some(Ok(c)) if !c.is_empty() => c,
            Some(_) => {
                return self.push(
                    "mqtt.client_cert",
                    format!("{} holds no valid PEM certificate", cert.display()),
                );
            }
            None => return,
        };
        let private = match private {
            Some(Ok(k)) => k,
            Some(Err(e)) => {
                return self.push(
                    "mqtt.client_key",
                    format!("{} holds no valid PEM private key: {e}", key_file.display()),
                );
            }
            None => return,
        };
        if roots.is_empty() {
            return;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let matched = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())
            .and_then(|b| {
                b.with_root_certificates(roots)
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = matched {
            self.push(
                "mqtt.client_key",
                format!("client certificate and key do not match: {e}"),
            );
        }
    }

    /// The OPC UA username identities' password files, resolved as the driver does (against the
    /// state directory).
    pub(super) fn check_device_files(&mut self, root: &toml::Table, state_dir: &Path) {
        let Some(toml::Value::Array(devices)) = root.get("device") else {
            return;
        };
        for (i, device) in devices.iter().enumerate() {
            let Some(file) = device
                .get("identity")
                .and_then(|id| id.get("password_file"))
                .and_then(|f| f.as_str())
            else {
                continue;
            };
            if device.get("enabled").and_then(|e| e.as_bool()) == Some(false) {
                continue;
            }
            let path = state_dir.join(file);
            self.check_password_file(&format!("device[{i}].identity.password_file"), &path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use crate::config::test_support::{GOOD, with_conf_d};
    use crate::config::{ConfigError, load};

    fn errors(text: &str) -> Vec<ConfigError> {
        let (_dir, path) = with_conf_d(text, &[]);
        load(&path).err().map(|e| e.0).unwrap_or_default()
    }

    fn warnings(text: &str) -> Vec<ConfigError> {
        let (_dir, path) = with_conf_d(text, &[]);
        load(&path).unwrap().warnings
    }

    fn with_password(path: &std::path::Path) -> String {
        GOOD.replace(
            "[mqtt]\n",
            &format!(
                "[mqtt]\nusername = \"u\"\npassword_file = {:?}\n",
                path.display().to_string()
            ),
        )
    }

    #[test]
    fn a_missing_or_empty_password_file_is_an_error_and_a_world_readable_one_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let errs = errors(&with_password(&path));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "mqtt.password_file");
        assert!(
            errs[0].message.contains("No such file"),
            "{}",
            errs[0].message
        );
        std::fs::write(&path, "\nsecret\n").unwrap();
        assert!(errors(&with_password(&path))[0].message.contains("empty"));
        std::fs::write(&path, "secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = warnings(&with_password(&path));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].message.contains("readable by every user"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(warnings(&with_password(&path)).is_empty());
    }

    #[test]
    fn a_password_file_that_is_a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&path)
                .status()
                .unwrap()
                .success()
        );
        let errs = errors(&with_password(&path));
        assert!(errs[0].message.contains("FIFO"), "{errs:?}");
    }
}
