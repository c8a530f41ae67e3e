//! Certificates made at run time for tests (feature `testing`): a CA, and leaf certificates
//! it signs, usable as server and client certificates. Nothing here is for production.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;

/// A test CA.
pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

/// A certificate the CA signed, and its key.
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
    /// The certificate, DER (to compare with what a server presented).
    pub der: CertificateDer<'static>,
}

/// Where [`TestPki::write`] put a leaf and the CA.
#[derive(Debug, Clone)]
pub struct Files {
    /// The leaf certificate.
    pub cert_file: PathBuf,
    /// The leaf's key.
    pub key_file: PathBuf,
    /// The CA certificate.
    pub ca_file: PathBuf,
}

impl TestPki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let ca_pem = params.self_signed(&key).expect("CA certificate").pem();
        TestPki {
            issuer: Issuer::new(params, key),
            ca_pem,
        }
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A leaf for `names` (DNS names or IP addresses such as `127.0.0.1`), for servers and
    /// clients alike.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// Issues a leaf for `names` and writes `<stem>.pem`, `<stem>-key.pem` and `ca.pem` into
    /// `dir` (replacing what is there: a test renews a certificate this way).
    pub fn write(&self, dir: &Path, stem: &str, names: &[&str]) -> (Files, Leaf) {
        let leaf = self.issue(names);
        let files = Files {
            cert_file: dir.join(format!("{stem}.pem")),
            key_file: dir.join(format!("{stem}-key.pem")),
            ca_file: dir.join("ca.pem"),
        };
        // The key first, then the certificate: a reload that notices the certificate's change
        // finds the matching key already there.
        std::fs::write(&files.key_file, &leaf.key_pem).expect("write key");
        std::fs::write(&files.cert_file, &leaf.cert_pem).expect("write certificate");
        std::fs::write(&files.ca_file, &self.ca_pem).expect("write CA");
        (files, leaf)
    }
}
