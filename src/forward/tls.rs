//! TLS and credentials for the broker connection. rustls with the ring provider (no aws-lc, no OpenSSL:
//! cross builds for ARM gateways stay simple). Secrets are read here and never logged.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::MqttConfig;

/// Where Debian, Ubuntu and Alpine keep the system CA bundle.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

pub fn client_config(cfg: &MqttConfig) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca_path = match &cfg.ca_file {
        Some(p) => p.clone(),
        None => SYSTEM_CA_BUNDLES
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
            .map(Path::to_path_buf)
            .context("no mqtt.ca_file set and no system CA bundle found")?,
    };
    for cert in CertificateDer::pem_file_iter(&ca_path)
        .with_context(|| format!("cannot read CA file {}", ca_path.display()))?
    {
        let cert = cert.with_context(|| format!("invalid PEM in CA file {}", ca_path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("invalid CA certificate in {}", ca_path.display()))?;
    }
    if roots.is_empty() {
        bail!("CA file {} holds no certificate", ca_path.display());
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol setup")?
        .with_root_certificates(roots);
    let config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("cannot read client certificate {}", cert.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("invalid PEM in client certificate {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("cannot read client key {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("client certificate and key do not match")?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The broker password from `password_file` (first line) or `password_env`.
pub fn password(cfg: &MqttConfig) -> Result<Option<String>> {
    if let Some(path) = &cfg.password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read mqtt.password_file {}", path.display()))?;
        let first = text.lines().next().unwrap_or("").to_string();
        if first.is_empty() {
            bail!("mqtt.password_file {} is empty", path.display());
        }
        return Ok(Some(first));
    }
    if let Some(var) = &cfg.password_env {
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => bail!("environment variable {var} (mqtt.password_env) is not set"),
        };
    }
    Ok(None)
}
