//! TLS for Signpost's listeners and clients, on rustls with the *ring* provider (one provider
//! for the whole workspace; nothing here needs a C toolchain).
//!
//! - [`ServerTls`]: a listener's certificate, key and, for mutual TLS, the CA its clients'
//!   certificates must be signed by. [`ReloadingAcceptor`] holds the loaded configuration and
//!   swaps it when the files change or on SIGHUP: new connections get the new certificate,
//!   open ones keep theirs.
//! - [`ClientTls`]: what a client trusts (a CA file, or the system's roots), the certificate it
//!   presents for mutual TLS, and Consul's `TLSSkipVerify`. [`ClientTls::client_config`] gives
//!   the `rustls::ClientConfig` a reqwest, hyper or tonic client is built with.
//! - With the `testing` feature, [`testing::TestPki`]: a CA and certificates made at run time,
//!   so no test commits a private key.

mod client;
mod server;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

pub use client::ClientTls;
pub use rustls;
pub use server::{ReloadingAcceptor, ServerTls};
pub use tokio_rustls;

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}: {source}")]
    Pem {
        /// What the file was meant to hold ("certificate", "private key", "CA").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::pki_types::pem::Error,
    },
    /// The file holds no certificate.
    #[error("{path} holds no certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate and its key go together: one was given without the other.
    #[error("a client certificate needs both cert_file and key_file")]
    HalfIdentity,
    /// Verifying clients needs the CA that signs their certificates.
    #[error("verify_incoming needs a ca_file: the CA that signs the clients' certificates")]
    NoClientCa,
    /// rustls refused the configuration (a key that does not match the certificate, ...).
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA.
    #[error("cannot verify clients with this CA: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// Neither a CA file nor any usable system root.
    #[error("no trusted roots: give a CA file (the system has none usable)")]
    NoRoots,
}

/// Makes *ring* the process's default rustls provider (once; a provider already installed
/// stays). reqwest, built with `rustls-no-provider`, builds every client that is not handed a
/// preconfigured TLS configuration (plain-HTTP clients included) from the process default and
/// panics without one: whatever builds such a client calls this first.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The crypto provider every Signpost TLS configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file, in order (leaf first for a chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        what: "certificate",
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem {
        what: "private key",
        path: path.to_path_buf(),
        source,
    })
}

/// The roots a peer is checked against: the CA file's certificates, or without one the
/// system's trusted roots.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path)? {
                store.add(cert)?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::debug!("system roots: {error}");
            }
            store.add_parsable_certificates(native.certs);
            if store.is_empty() {
                return Err(TlsError::NoRoots);
            }
        }
    }
    Ok(store)
}
