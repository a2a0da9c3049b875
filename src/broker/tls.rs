//! TLS for `amqps://` and `https://`: RabbitMQ's URI-spec query parameters (`cacertfile`,
//! `certfile`, `keyfile`, `verify`, `server_name_indication`), read and checked before anything
//! connects, and turned into one rustls configuration for AMQP and one for the management API.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::error::{Error, Result};

/// The TLS query parameters of one `amqps://` URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    /// PEM file of the CA certificates to trust; the system's roots when absent.
    pub cacertfile: Option<PathBuf>,
    /// PEM client certificate (chain) and its key, presented when the server asks.
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// `verify=verify_peer` (the default) or `verify_none`.
    pub verify_peer: bool,
    /// The name sent as SNI and checked against the server's certificate, when it is not
    /// the URL's host.
    pub server_name: Option<String>,
}

/// The parameters this module reads; any of them on an `amqp://` URL is a usage error (the
/// user wanted TLS and would silently get a plain connection).
pub(crate) const PARAMETERS: [&str; 5] = [
    "cacertfile",
    "certfile",
    "keyfile",
    "verify",
    "server_name_indication",
];

impl TlsOptions {
    /// Reads the query parameters of a URL. `tls` says whether the scheme is amqps.
    pub(crate) fn from_url(url: &url::Url, tls: bool) -> Result<Option<TlsOptions>> {
        let get = |key: &str| {
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        if !tls {
            if let Some(p) = PARAMETERS.iter().find(|p| get(p).is_some()) {
                return Err(Error::usage(format!(
                    "the broker URL sets {p} but is not amqps://: use amqps:// for TLS"
                )));
            }
            return Ok(None);
        }
        let verify_peer = match get("verify").as_deref() {
            None | Some("verify_peer") => true,
            Some("verify_none") => false,
            Some(other) => {
                return Err(Error::usage(format!(
                    "the broker URL's verify={} is not verify_peer or verify_none",
                    crate::util::printable(other)
                )))
            }
        };
        let options = TlsOptions {
            cacertfile: get("cacertfile").map(PathBuf::from),
            certfile: get("certfile").map(PathBuf::from),
            keyfile: get("keyfile").map(PathBuf::from),
            verify_peer,
            server_name: get("server_name_indication").filter(|s| !s.is_empty()),
        };
        if options.certfile.is_some() != options.keyfile.is_some() {
            return Err(Error::usage(
                "the broker URL needs both certfile and keyfile for a client certificate",
            ));
        }
        if let Some(name) = &options.server_name {
            if ServerName::try_from(name.as_str()).is_err() {
                return Err(Error::usage(format!(
                    "the broker URL's server_name_indication \"{}\" is not a host name",
                    crate::util::printable(name)
                )));
            }
        }
        Ok(Some(options))
    }

    /// Reads every file it names and builds the AMQP configuration from them, once, when the
    /// URL is parsed: a missing, unreadable or unusable file is a usage error before connecting.
    pub(crate) fn prepare(self) -> Result<Tls> {
        let material = self.load()?;
        let config = material.rustls()?;
        Ok(Tls {
            options: self,
            material,
            config,
        })
    }

    /// Reads every file it names: a missing, unreadable or empty one is a usage error.
    fn load(&self) -> Result<TlsMaterial> {
        let roots = match &self.cacertfile {
            Some(path) => Some(certificates(path, "cacertfile")?),
            None => None,
        };
        let identity = match (&self.certfile, &self.keyfile) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, "certfile")?;
                let bad = |why: String| {
                    Error::usage(format!("cannot read the keyfile {}: {why}", key.display()))
                };
                let pem = std::fs::read(key).map_err(|e| bad(crate::util::io_reason(&e)))?;
                let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad(pem_reason(&e)))?;
                Some((chain, Arc::new(der), Arc::new(pem)))
            }
            _ => None,
        };
        Ok(TlsMaterial {
            roots,
            identity,
            verify_peer: self.verify_peer,
        })
    }
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bad =
        |why: String| Error::usage(format!("cannot read the {what} {}: {why}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(pem_reason(&e)))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(bad("it holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => crate::util::io_reason(io),
        rustls::pki_types::pem::Error::NoItemsFound => "it holds no PEM key".into(),
        other => format!("not a valid PEM file ({other:?})"),
    }
}

/// The TLS of one amqps:// URL: its parameters, what their files hold, and the rustls
/// configuration AMQP connects with.
#[derive(Clone)]
pub struct Tls {
    pub(crate) options: TlsOptions,
    pub(crate) material: TlsMaterial,
    pub config: Arc<ClientConfig>,
}

/// Two URLs' TLS is the same when their parameters are (the files are read from those).
impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        self.options == other.options
    }
}

impl Eq for Tls {}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("options", &self.options)
            .field("material", &self.material)
            .finish_non_exhaustive()
    }
}

/// The client certificate chain, its key, and the key file's PEM text (for ureq).
type ClientIdentity = (
    Vec<CertificateDer<'static>>,
    Arc<PrivateKeyDer<'static>>,
    Arc<Vec<u8>>,
);

/// The certificates and key of a [`TlsOptions`], read from their files.
#[derive(Clone)]
pub(crate) struct TlsMaterial {
    roots: Option<Vec<CertificateDer<'static>>>,
    identity: Option<ClientIdentity>,
    verify_peer: bool,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("roots", &self.roots.as_ref().map(Vec::len))
            .field("client_certificate", &self.identity.is_some())
            .field("verify_peer", &self.verify_peer)
            .finish()
    }
}

impl TlsMaterial {
    /// The rustls configuration for AMQP: the given CA (else the system's roots), the client
    /// certificate if any, no verification at all under `verify_none`.
    fn rustls(&self) -> Result<Arc<ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::with_cause("cannot set up TLS", e))?;
        let builder = if self.verify_peer {
            let mut store = rustls::RootCertStore::empty();
            match &self.roots {
                Some(roots) => {
                    for cert in roots {
                        store.add(cert.clone()).map_err(|e| {
                            Error::usage(format!(
                                "the cacertfile holds a certificate rustls cannot use: {e}"
                            ))
                        })?;
                    }
                }
                None => {
                    let native = rustls_native_certs::load_native_certs();
                    store.add_parsable_certificates(native.certs);
                }
            }
            builder.with_root_certificates(store)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        };
        let config = match &self.identity {
            Some((chain, key, _)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| {
                    Error::usage(format!(
                        "the certfile and keyfile do not make a client certificate: {e}"
                    ))
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// The same trust and client certificate for the management API over https.
    pub(crate) fn ureq(&self) -> ureq::tls::TlsConfig {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts};
        let mut builder = ureq::tls::TlsConfig::builder().disable_verification(!self.verify_peer);
        builder = match &self.roots {
            Some(roots) => builder.root_certs(RootCerts::new_with_certs(
                &roots
                    .iter()
                    .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                    .collect::<Vec<_>>(),
            )),
            None => builder,
        };
        if let Some((chain, _, pem)) = &self.identity {
            let chain: Vec<Certificate<'static>> = chain
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            // The same file rustls parsed already; ureq reads the key kind from its PEM label.
            if let Ok(key) = PrivateKey::from_pem(pem) {
                builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
            }
        }
        builder.build()
    }
}

/// `verify=verify_none`: accepts any server certificate (signatures are still checked, so the
/// handshake itself stays sound).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One line for a failed TLS handshake, from the error text rustls and the server gave.
/// None when the text is not about TLS.
pub(crate) fn handshake_reason(text: &str, host: &str, options: &TlsOptions) -> Option<String> {
    // rustls words one failure as "UnknownIssuer" or "unknown issuer" depending on where it
    // comes from: compare without case or spaces.
    let t = text.to_lowercase().replace(' ', "");
    let name = options.server_name.as_deref().unwrap_or(host);
    if t.contains("unknownissuer") || t.contains("badsignature") {
        return Some(match &options.cacertfile {
            Some(ca) => format!(
                "the server's certificate is not signed by the CA in {} (TLS: untrusted server)",
                ca.display()
            ),
            None => "the server's certificate is not signed by a CA this system trusts (TLS: untrusted server); give its CA with ?cacertfile=FILE".to_string(),
        });
    }
    if t.contains("notvalidforname") {
        return Some(format!(
            "the server's certificate is not valid for the name \"{name}\" (TLS: name mismatch); connect by a name the certificate lists, or set ?server_name_indication=NAME"
        ));
    }
    if t.contains("expired") || t.contains("notvalidyet") {
        return Some("the server's certificate is expired or not yet valid (TLS)".to_string());
    }
    let alert = [
        (
            "unknownca",
            "the server does not trust the client certificate's CA",
        ),
        (
            "badcertificate",
            "the server rejected the client certificate",
        ),
        (
            "certificaterequired",
            "the server requires a client certificate (set ?certfile=…&keyfile=…)",
        ),
        ("handshakefailure", "the server refused the TLS handshake"),
    ];
    alert
        .iter()
        .find(|(needle, _)| t.contains(needle))
        .map(|(_, why)| format!("{why} (TLS)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(u: &str) -> Result<Option<TlsOptions>> {
        let url = url::Url::parse(u).unwrap();
        let tls = url.scheme() == "amqps";
        TlsOptions::from_url(&url, tls)
    }

    #[test]
    fn reads_the_uri_spec_parameters() {
        let o = opts("amqps://h/%2f?cacertfile=/etc/ca.pem&certfile=/c.pem&keyfile=/k.pem&verify=verify_none&server_name_indication=mq.example.com")
            .unwrap()
            .unwrap();
        assert_eq!(o.cacertfile, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(o.certfile, Some(PathBuf::from("/c.pem")));
        assert_eq!(o.keyfile, Some(PathBuf::from("/k.pem")));
        assert!(!o.verify_peer);
        assert_eq!(o.server_name.as_deref(), Some("mq.example.com"));
    }

    #[test]
    fn verifies_the_peer_by_default() {
        let o = opts("amqps://h").unwrap().unwrap();
        assert!(o.verify_peer);
        assert_eq!(
            o,
            TlsOptions {
                verify_peer: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn bad_parameters_are_usage_errors() {
        for (u, needle) in [
            ("amqps://h?verify=maybe", "verify=maybe"),
            ("amqps://h?certfile=/c.pem", "both certfile and keyfile"),
            ("amqps://h?server_name_indication=a%20b", "not a host name"),
            ("amqp://h?cacertfile=/ca.pem", "not amqps://"),
        ] {
            let e = opts(u).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{u}");
            assert!(e.message().contains(needle), "{u}: {}", e.message());
        }
        assert_eq!(opts("amqp://h").unwrap(), None);
    }

    #[test]
    fn a_missing_or_empty_file_is_a_usage_error_naming_it() {
        let o = opts("amqps://h?cacertfile=/nonexistent/ca.pem")
            .unwrap()
            .unwrap();
        let e = o.load().unwrap_err();
        assert!(matches!(e, Error::Usage(_)));
        assert!(
            e.message().contains("cacertfile /nonexistent/ca.pem"),
            "{}",
            e.message()
        );
        let empty = tempfile::NamedTempFile::new().unwrap();
        let o = TlsOptions {
            cacertfile: Some(empty.path().to_path_buf()),
            verify_peer: true,
            ..Default::default()
        };
        assert!(o
            .load()
            .unwrap_err()
            .message()
            .contains("no PEM certificate"));
    }

    #[test]
    fn handshake_failures_are_named() {
        let o = TlsOptions {
            verify_peer: true,
            ..Default::default()
        };
        let r = |t: &str| handshake_reason(t, "127.0.0.1", &o).unwrap();
        assert!(r("invalid peer certificate: UnknownIssuer").contains("untrusted server"));
        assert!(r("invalid peer certificate: NotValidForName").contains("name mismatch"));
        assert!(r("received fatal alert: UnknownCA").contains("client certificate's CA"));
        assert!(r("received fatal alert: CertificateRequired")
            .contains("requires a client certificate"));
        assert_eq!(handshake_reason("connection refused", "h", &o), None);
    }
}
