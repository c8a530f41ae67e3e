//! A listener's TLS: the configuration loaded from files, and its hot reload.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use stamp::Stamp;
use tokio_rustls::TlsAcceptor;

use crate::{load_certs, load_key, provider, roots, TlsError};

/// A listener's certificate and key, and the CA its clients must present certificates from
/// when `verify_incoming` is set (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf.
    pub key_file: PathBuf,
    /// PEM CA certificates that sign the clients' certificates.
    pub ca_file: Option<PathBuf>,
    /// Require a client certificate signed by `ca_file`.
    pub verify_incoming: bool,
}

impl ServerTls {
    /// Loads the files into a server configuration offering `alpn` (e.g. `h2`, `http/1.1`).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
        let certs = load_certs(&self.cert_file)?;
        let key = load_key(&self.key_file)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = if self.verify_incoming {
            let ca = self.ca_file.as_deref().ok_or(TlsError::NoClientCa)?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(Some(ca))?), provider())
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    fn files(&self) -> Vec<&Path> {
        let mut files = vec![self.cert_file.as_path(), self.key_file.as_path()];
        files.extend(self.ca_file.as_deref());
        files
    }
}

/// A listener's TLS configuration that can be swapped while it serves: each accepted
/// connection takes the current one ([`ReloadingAcceptor::acceptor`]); [`reload`] reads the
/// files again and keeps the old configuration if they are unreadable or do not match.
///
/// [`reload`]: ReloadingAcceptor::reload
#[derive(Debug)]
pub struct ReloadingAcceptor {
    spec: ServerTls,
    alpn: Vec<Vec<u8>>,
    current: RwLock<(Arc<ServerConfig>, Stamp)>,
}

impl ReloadingAcceptor {
    /// Loads `spec` (an error here is a configuration error: the listener must not start).
    pub fn new(spec: ServerTls, alpn: &[&[u8]]) -> Result<Arc<Self>, TlsError> {
        let stamp = Stamp::of(&spec.files());
        let config = spec.server_config(alpn)?;
        Ok(Arc::new(ReloadingAcceptor {
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            spec,
            current: RwLock::new((Arc::new(config), stamp)),
        }))
    }

    /// What this acceptor was loaded from.
    pub fn spec(&self) -> &ServerTls {
        &self.spec
    }

    /// The configuration new connections get.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// An acceptor for the next connection, with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    /// Reads the files again. On error the current configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = Stamp::of(&self.spec.files());
        let alpn: Vec<&[u8]> = self.alpn.iter().map(Vec::as_slice).collect();
        let config = self.spec.server_config(&alpn)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(config), stamp);
        Ok(())
    }

    /// Whether a file changed (size or modification time) since it was last loaded.
    pub fn changed_on_disk(&self) -> bool {
        let loaded = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone();
        loaded != Stamp::of(&self.spec.files())
    }

    /// Reloads on SIGHUP and whenever the files change (checked every `poll`), until
    /// `shutdown` resolves. A failed reload is logged and the old certificate kept. The caller
    /// spawns it and keeps its handle.
    pub async fn watch(self: Arc<Self>, poll: Duration, shutdown: impl Future<Output = ()>) {
        let mut hangup = hangup();
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let why = tokio::select! {
                _ = &mut shutdown => return,
                _ = recv(&mut hangup) => "SIGHUP",
                _ = tick.tick() => {
                    if !self.changed_on_disk() {
                        continue;
                    }
                    "files changed"
                }
            };
            match self.reload() {
                Ok(()) => tracing::info!(
                    cert_file = %self.spec.cert_file.display(),
                    "TLS certificate reloaded ({why})"
                ),
                Err(e) => {
                    tracing::error!("TLS reload ({why}) failed, keeping the old certificate: {e}")
                }
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup() -> Hangup {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP: {e}");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup() -> Hangup {}

#[cfg(unix)]
async fn recv(hangup: &mut Hangup) {
    match hangup {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv(_: &mut Hangup) {
    std::future::pending().await
}

mod stamp {
    use super::*;

    /// Size and modification time of each file, to notice a change without reading it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Stamp(Vec<Option<(u64, SystemTime)>>);

    impl Stamp {
        pub fn of(files: &[&Path]) -> Self {
            Stamp(
                files
                    .iter()
                    .map(|f| {
                        let meta = std::fs::metadata(f).ok()?;
                        Some((meta.len(), meta.modified().ok()?))
                    })
                    .collect(),
            )
        }
    }
}
