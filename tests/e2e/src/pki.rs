//! Throw-away TLS material: a CA and a server certificate for localhost / 127.0.0.1, written as
//! PEM files into their own temp dir (readable by httpd's children and by websocketd).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// CA + server certificate. Cheap to clone (shares the temp dir).
#[derive(Clone)]
pub struct Pki {
    inner: Arc<PkiInner>,
}

struct PkiInner {
    dir: tempfile::TempDir,
    ca_der: CertificateDer<'static>,
}

impl Pki {
    /// Generate a new CA and a server certificate (SAN: localhost, 127.0.0.1), ECDSA P-256.
    pub fn generate() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("wst-e2e-pki-")
            .tempdir()
            .expect("create pki temp dir");
        crate::httpd::make_world_readable(dir.path());

        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "wst-e2e test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).expect("self-sign ca");

        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("sign server cert");

        let p = dir.path();
        write(&p.join("ca.pem"), &ca.pem());
        write(&p.join("server.pem"), &cert.pem());
        write(&p.join("server.key"), &key.serialize_pem());
        // Certificate followed by the CA: a full chain for servers that want one.
        write(&p.join("chain.pem"), &format!("{}{}", cert.pem(), ca.pem()));

        Pki {
            inner: Arc::new(PkiInner {
                dir,
                ca_der: ca.der().clone(),
            }),
        }
    }

    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }
    /// PEM of the CA certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }
    /// PEM of the server certificate (localhost, 127.0.0.1).
    pub fn cert_file(&self) -> PathBuf {
        self.dir().join("server.pem")
    }
    /// PEM (PKCS#8) of the server key.
    pub fn key_file(&self) -> PathBuf {
        self.dir().join("server.key")
    }

    /// rustls client config that trusts only this CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.inner.ca_der.clone()).expect("add ca");
        Arc::new(
            ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// rustls server config from PEM files (used by wst-echo). `tls13_tickets`: how many TLS 1.3
/// session tickets to send after the handshake (rustls default: 2, like OpenSSL).
pub fn server_config_from_files(
    cert: &Path,
    key: &Path,
    tls13_tickets: Option<usize>,
) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut cfg = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server config: {e}"))?;
    if let Some(n) = tls13_tickets {
        cfg.send_tls13_tickets = n;
    }
    Ok(Arc::new(cfg))
}

fn write(path: &Path, s: &str) {
    std::fs::write(path, s).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    crate::httpd::make_world_readable(path);
}
