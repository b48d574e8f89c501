//! TLS for `serve`: the command-line options, loading the certificate chain and key
//! (PEM), the rustls acceptor (TLS 1.2 and 1.3, ring provider), and the warning printed
//! when the server listens in the clear on a non-loopback address.
//!
//! TLS only wraps the byte stream: the connection task (module `conn`) runs unchanged
//! over the TLS stream once the handshake is done.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// TLS options of `serve`: both files, or neither (plain TCP).
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    /// Serve over TLS with this certificate chain (PEM, the server's certificate first).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Drop a connection whose TLS handshake has not completed within this long.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_handshake_timeout_ms: u64,
}

/// What `serve` needs to accept TLS connections.
#[derive(Clone)]
pub struct Tls {
    /// The acceptor (shared by every connection).
    pub acceptor: TlsAcceptor,
    /// The bound of one handshake.
    pub handshake_timeout: Duration,
}

impl TlsArgs {
    /// The TLS set-up, or `None` for plain TCP; fails if a file cannot be read or holds
    /// no usable certificate or key, or if the key does not match the certificate.
    pub fn load(&self) -> Result<Option<Tls>> {
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) => return Ok(None),
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        let config = server_config(cert, key)?;
        Ok(Some(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms),
        }))
    }
}

/// A rustls server configuration: TLS 1.2 and 1.3, no client authentication.
fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read certificates from {}", cert.display()))?;
    if chain.is_empty() {
        bail!("no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a private key from {}", key.display()))?;
    ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("unusable certificate or key")
}

/// Says loudly, on stderr (the log and a plain line), that the server listens in the
/// clear on an address reachable from elsewhere. Does nothing for a loopback address.
pub fn warn_if_exposed(local: SocketAddr) {
    if local.ip().to_canonical().is_loopback() {
        return;
    }
    tracing::warn!(
        %local,
        "listening WITHOUT TLS on a non-loopback address: passwords, presence and \
         capabilities cross the network in the clear; use --tls-cert and --tls-key"
    );
    eprintln!(
        "WARNING: precall-server listens on {local} WITHOUT TLS: passwords, presence and \
         capabilities are sent in the clear to anyone on the path. Use --tls-cert and \
         --tls-key, or listen on a loopback address."
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    fn serve(args: &[&str]) -> Result<TlsArgs, clap::Error> {
        let argv = ["precall-server", "serve", "--db", "x.db"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv)?.command {
            Command::Serve(a) => Ok(a.tls),
            Command::Admin(_) => panic!("not serve"),
        }
    }

    #[test]
    fn cert_and_key_go_together() {
        let none = serve(&[]).unwrap();
        assert!(none.tls_cert.is_none() && none.tls_key.is_none());
        assert_eq!(none.tls_handshake_timeout_ms, 10_000);
        assert!(none.load().unwrap().is_none());
        let both = serve(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert_eq!(both.tls_cert.as_deref(), Some(Path::new("c.pem")));
        assert_eq!(both.tls_key.as_deref(), Some(Path::new("k.pem")));
        assert!(serve(&["--tls-cert", "c.pem"]).is_err());
        assert!(serve(&["--tls-key", "k.pem"]).is_err());
        assert!(serve(&["--tls-handshake-timeout-ms", "0"]).is_err());
    }

    #[test]
    fn missing_or_empty_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let missing = dir.path().join("missing.pem");
        let load = |cert: &Path, key: &Path| {
            TlsArgs {
                tls_cert: Some(cert.to_owned()),
                tls_key: Some(key.to_owned()),
                tls_handshake_timeout_ms: 10_000,
            }
            .load()
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
        };
        let e = load(&missing, &missing).unwrap_err();
        assert!(e.contains("cannot read certificates"), "{e}");
        let e = load(&empty, &empty).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
    }
}
