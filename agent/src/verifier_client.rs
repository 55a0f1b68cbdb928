//! The agent's HTTPS client for the verifier's JSON API: TLS with only the configured CA as
//! trust anchor, one connection per call (attestation is rare), refusals returned with the
//! verifier's reasons.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use edgeward_attestation::api::ErrorBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The most a response may be: certificates and verdicts are small.
const MAX_RESPONSE: usize = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);

/// The verifier said no, with its reasons.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: ErrorBody,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the verifier refused (HTTP {}, {}): {}",
            self.status, self.body.error, self.body.reason
        )?;
        if self.body.reasons.len() > 1 {
            for reason in &self.body.reasons {
                write!(f, "\n  - {reason}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

pub struct VerifierClient {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
}

impl VerifierClient {
    /// `url` is `https://HOST[:PORT]`; `ca_pem` the CA that signed the verifier's certificate.
    pub fn new(url: &str, ca_pem: &str) -> Result<Self> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::CertificateDer;
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a URL"))?;
        if uri.scheme_str() != Some("https") {
            bail!("the verifier URL must be https://HOST[:PORT], got {url:?}");
        }
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("the verifier URL {url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(certificate.context("the verifier CA file is not PEM")?)
                .context("the verifier CA certificate is unusable")?;
        }
        if roots.is_empty() {
            bail!("the verifier CA file holds no certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(host.clone())
            .with_context(|| format!("{host:?} is not a host name"))?;
        Ok(Self {
            host,
            port,
            server_name,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// `POST /v1/<endpoint>` with `body`; a refusal comes back as a [`Refused`] error.
    pub async fn post<Q: Serialize, R: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: &Q,
    ) -> Result<R> {
        tokio::time::timeout(TIMEOUT, self.exchange(endpoint, body))
            .await
            .map_err(|_| anyhow!("the verifier did not answer /v1/{endpoint} within {TIMEOUT:?}"))?
    }

    async fn exchange<Q: Serialize, R: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: &Q,
    ) -> Result<R> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot reach the verifier at {}:{}", self.host, self.port))?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .context("TLS with the verifier failed (is --ca the CA of its certificate?)")?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        let connection = tokio::spawn(connection);
        let request = hyper::Request::post(format!("/v1/{endpoint}"))
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|error| anyhow!("reading the verifier's answer: {error}"))?
            .to_bytes();
        drop(sender);
        connection.abort();
        if status.is_success() {
            return serde_json::from_slice(&bytes).with_context(|| {
                format!("the verifier's answer to /v1/{endpoint} is not what the API says")
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(Refused {
                status: status.as_u16(),
                body,
            }
            .into()),
            Err(_) => bail!(
                "the verifier answered {status} to /v1/{endpoint}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ),
        }
    }
}
