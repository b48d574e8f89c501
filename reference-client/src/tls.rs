//! TLS for the client: the CA bundle the server is verified against, the name it is
//! verified for, and the handshake. TLS only wraps the byte stream; the session runs
//! unchanged over it.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// The bound of the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the client needs to connect over TLS.
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl Tls {
    /// Trusts the certificates in the PEM file `ca` (and only them) and verifies the
    /// server's certificate for `name`, or, if `None`, for the host part of `server`
    /// (`localhost` when that is an IP address). The message says what is wrong.
    pub fn new(ca: &Path, name: Option<&str>, server: &str) -> Result<Tls, String> {
        let name = match name {
            Some(n) => n.to_owned(),
            None => default_name(server),
        };
        let name = ServerName::try_from(name.clone())
            .map_err(|e| format!("--tls-server-name: {name:?}: {e}"))?;
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--tls-ca: cannot read {}: {e}", ca.display()))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("--tls-ca: {}: unusable certificate: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("--tls-ca: no certificate in {}", ca.display()));
        }
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// The name the server's certificate is verified for.
    pub fn name(&self) -> String {
        self.name.to_str().into_owned()
    }

    /// Runs the handshake over `stream`, verifying the server's certificate chain and
    /// name; at most 10 s (`HANDSHAKE_TIMEOUT`).
    pub async fn connect(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        match tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            self.connector.connect(self.name.clone(), stream),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
            )),
        }
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed), or `localhost`
/// when it is an IP address.
fn default_name(server: &str) -> String {
    let host = match server.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => server,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.parse::<IpAddr>().is_ok() {
        "localhost".to_owned()
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_name_is_the_host_or_localhost_for_an_ip() {
        assert_eq!(default_name("chat.example.org:7878"), "chat.example.org");
        assert_eq!(default_name("127.0.0.1:7878"), "localhost");
        assert_eq!(default_name("[::1]:7878"), "localhost");
        assert_eq!(default_name("localhost:1"), "localhost");
        assert_eq!(default_name("host-only"), "host-only");
    }

    #[test]
    fn bad_ca_files_and_names_are_errors() {
        let dir = std::env::temp_dir().join(format!("precall-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = Tls::new(&empty, None, "127.0.0.1:1").err().unwrap();
        assert!(e.contains("no certificate"), "{e}");
        let e = Tls::new(&dir.join("missing.pem"), None, "127.0.0.1:1")
            .err()
            .unwrap();
        assert!(e.contains("cannot read"), "{e}");
        let e = Tls::new(&empty, Some("not a name"), "127.0.0.1:1")
            .err()
            .unwrap();
        assert!(e.contains("--tls-server-name"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
