//! A throw-away CA and a certificate for 127.0.0.1, for wss:// (TLS at the
//! proxy: httpd's mod_ssl, nginx, HAProxy).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;

pub struct Pki {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate then key, for HAProxy's `crt`.
    pub combined: PathBuf,
    ca_der: CertificateDer<'static>,
}

impl Pki {
    pub fn generate(dir: &Path) -> Result<Pki, String> {
        let e = |w: &str, x: rcgen::Error| format!("{w}: {x}");
        let ca_key = KeyPair::generate().map_err(|x| e("ca key", x))?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|x| e("ca", x))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "wst-bench CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).map_err(|x| e("ca sign", x))?;
        let key = KeyPair::generate().map_err(|x| e("key", x))?;
        let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|x| e("cert", x))?;
        p.distinguished_name.push(DnType::CommonName, "localhost");
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p
            .signed_by(&key, &ca_cert, &ca_key)
            .map_err(|x| e("cert sign", x))?;
        let pki = Pki {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            combined: dir.join("combined.pem"),
            ca_der: ca_cert.der().clone(),
        };
        let w = |p: &Path, s: &str| std::fs::write(p, s).map_err(|x| format!("{}: {x}", p.display()));
        w(&pki.cert, &cert.pem())?;
        w(&pki.key, &key.serialize_pem())?;
        w(&pki.combined, &format!("{}{}", cert.pem(), key.serialize_pem()))?;
        Ok(pki)
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let _ = roots.add(self.ca_der.clone());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        match cfg {
            Ok(c) => Arc::new(c),
            Err(e) => {
                eprintln!("wst-bench: TLS client config: {e}");
                std::process::exit(1)
            }
        }
    }
}
