//! The HTTPS service: TLS (rustls), HTTP/1.1 (hyper), JSON in and out; each request is decoded,
//! handed to `edgeward_attestation::verifier` with the time and randomness, and its record
//! stored. Nothing here decides anything.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{Context, Result};
use edgeward_attestation::api::{
    ActivateRequest, ActivateResponse, AttestRequest, CertifyRequest, ErrorBody, Hex, NonceRequest,
    NonceResponse, RegisterRequest,
};
use edgeward_attestation::device_ca::DeviceCa;
use edgeward_attestation::verifier::{self, DeviceId, NonceBook, Policy, Refusal};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument as _;

use super::config::Loaded;
use super::store::Store;

/// The largest request body: an event log of a few hundred events, in hex, with room to spare.
const MAX_BODY: usize = 4 << 20;

pub struct Service {
    policy: Policy,
    ca: DeviceCa,
    store: Store,
    nonces: Mutex<NonceBook>,
}

enum Failure {
    Refused(Refusal),
    Internal(anyhow::Error),
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

impl From<verifier::IdentityError> for Failure {
    fn from(error: verifier::IdentityError) -> Self {
        Self::Refused(error.into())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::Internal(error)
    }
}

type Answer = Result<(StatusCode, Vec<u8>), Failure>;

fn json<T: Serialize>(value: &T) -> Answer {
    Ok((
        StatusCode::OK,
        serde_json::to_vec(value).map_err(anyhow::Error::from)?,
    ))
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|error| Refusal::BadRequest(error.to_string()))
}

fn known(
    record: Option<verifier::DeviceRecord>,
    id: &DeviceId,
) -> Result<verifier::DeviceRecord, Refusal> {
    record.ok_or_else(|| Refusal::UnknownDevice(id.to_string()))
}

impl Service {
    pub fn new(loaded: Loaded) -> Result<Self> {
        Ok(Self {
            store: Store::open(&loaded.config.state_dir)?,
            policy: loaded.policy,
            ca: loaded.ca,
            nonces: Mutex::new(NonceBook::new(&mut rand::rngs::OsRng)),
        })
    }

    fn nonces(&self) -> std::sync::MutexGuard<'_, NonceBook> {
        // A panic while holding the book cannot leave it inconsistent (single map operations).
        self.nonces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Handles one API call. Runs on a blocking thread: it takes the state file lock.
    fn handle(&self, path: &str, body: &[u8]) -> Answer {
        let now = SystemTime::now();
        let mut rng = rand::rngs::OsRng;
        match path {
            "/v1/register" => {
                let request: RegisterRequest = decode(body)?;
                let (ek, id) = verifier::identity_of(&request)?;
                tracing::Span::current().record("device", tracing::field::display(&id));
                let fingerprint = hex::encode(ek.fingerprint());
                let lock = self.store.lock()?;
                let existing = self.store.get(&lock, &id)?;
                let owner = self.store.ek_owner(&lock, &fingerprint)?;
                let (record, response) =
                    verifier::register(&self.policy, request, existing, owner, now, &mut rng)?;
                self.store.put(&lock, &record)?;
                tracing::info!(ek = %record.ek_fingerprint, chain = ?record.ek_chain, "registered; credential challenge sent");
                json(&response)
            }
            "/v1/activate" => {
                let request: ActivateRequest = decode(body)?;
                let id = DeviceId::new(&request.device)?;
                tracing::Span::current().record("device", tracing::field::display(&id));
                let lock = self.store.lock()?;
                let record = known(self.store.get(&lock, &id)?, &id)?;
                let record = verifier::activate(record, &request, now)?;
                self.store.put(&lock, &record)?;
                tracing::info!("AK activated: bound to the EK");
                json(&ActivateResponse {
                    device: id.to_string(),
                    activated: true,
                })
            }
            "/v1/nonce" => {
                let request: NonceRequest = decode(body)?;
                let id = DeviceId::new(&request.device)?;
                tracing::Span::current().record("device", tracing::field::display(&id));
                let record = {
                    let lock = self.store.lock()?;
                    known(self.store.get(&lock, &id)?, &id)?
                };
                if let Some(denial) = &record.denied {
                    return Err(Refusal::Denied {
                        device: id.to_string(),
                        reason: denial.reason.clone(),
                    }
                    .into());
                }
                if record.ak_public.is_none() {
                    return Err(Refusal::NotActivated(id.to_string()).into());
                }
                let nonce = self
                    .nonces()
                    .issue(&id, self.policy.nonce_lifetime, now, &mut rng);
                json(&NonceResponse {
                    nonce: Hex(nonce.as_bytes().to_vec()),
                    pcrs: self.policy.pcrs.clone(),
                    expires_in: self.policy.nonce_lifetime.as_secs(),
                })
            }
            "/v1/attest" => {
                let request: AttestRequest = decode(body)?;
                let id = DeviceId::new(&request.device)?;
                tracing::Span::current().record("device", tracing::field::display(&id));
                let lock = self.store.lock()?;
                let record = known(self.store.get(&lock, &id)?, &id)?;
                // Err: not the device's own TPM speaking; nothing is stored.
                let (record, verdict) =
                    verifier::attest(&self.policy, record, &request, &mut self.nonces(), now)?;
                self.store.put(&lock, &record)?;
                if verdict.accepted {
                    for skipped in &verdict.skipped {
                        tracing::debug!(check = %skipped.check, reason = %skipped.reason, "check skipped by policy");
                    }
                    tracing::info!(manifest = ?verdict.manifest, skipped = verdict.skipped.len(), "attestation accepted");
                    json(&verdict)
                } else {
                    // Logged once, with every reason, as each refusal is (`answer`).
                    Err(Refusal::Attestation(verdict.reasons).into())
                }
            }
            "/v1/certify" => {
                let request: CertifyRequest = decode(body)?;
                let id = DeviceId::new(&request.device)?;
                tracing::Span::current().record("device", tracing::field::display(&id));
                let lock = self.store.lock()?;
                let record = known(self.store.get(&lock, &id)?, &id)?;
                let (record, response) = verifier::certify(
                    &self.policy,
                    record,
                    &request,
                    &mut self.nonces(),
                    &self.ca,
                    now,
                    &mut rng,
                )?;
                self.store.put(&lock, &record)?;
                tracing::info!(serial = %response.serial, not_after = response.not_after, "device certificate issued");
                json(&response)
            }
            _ => Err(Refusal::BadRequest(format!("no endpoint {path}")).into()),
        }
    }

    fn answer(&self, path: &str, body: &[u8]) -> (StatusCode, Vec<u8>) {
        // The device is recorded once the request names one, so every line of the request,
        // its refusal too, says which device it was.
        let _request =
            tracing::info_span!("request", endpoint = path, device = tracing::field::Empty)
                .entered();
        match self.handle(path, body) {
            Ok(answer) => answer,
            Err(Failure::Refused(refusal)) => {
                tracing::warn!(code = refusal.code(), reason = %refusal, "refused");
                let status =
                    StatusCode::from_u16(refusal.http_status()).unwrap_or(StatusCode::FORBIDDEN);
                let body = ErrorBody {
                    error: refusal.code().into(),
                    reason: refusal.to_string(),
                    reasons: refusal.reasons(),
                };
                (status, serde_json::to_vec(&body).unwrap_or_default())
            }
            Err(Failure::Internal(error)) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                let body = ErrorBody {
                    error: "internal".into(),
                    reason: "the verifier could not complete the request; its log says why".into(),
                    reasons: Vec::new(),
                };
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::to_vec(&body).unwrap_or_default(),
                )
            }
        }
    }
}

async fn respond(
    service: Arc<Service>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = request.uri().path().to_owned();
    let (status, body) = if request.method() == Method::GET && path == "/v1/health" {
        (StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
    } else if request.method() != Method::POST {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            br#"{"error":"bad_request","reason":"the API takes POST with a JSON body"}"#.to_vec(),
        )
    } else {
        match Limited::new(request.into_body(), MAX_BODY).collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                let task_path = path.clone();
                tokio::task::spawn_blocking(move || service.answer(&task_path, &bytes))
                    .await
                    .unwrap_or_else(|_| {
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            br#"{"error":"internal","reason":"the request handler failed"}"#.to_vec(),
                        )
                    })
            }
            Err(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                br#"{"error":"bad_request","reason":"the body is larger than 4 MiB or was cut off"}"#.to_vec(),
            ),
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn tls_config(certificate: &str, key: &str) -> Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(certificate.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the TLS certificate is not PEM")?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).context("the TLS key is not PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves until SIGINT or SIGTERM.
pub async fn serve(loaded: Loaded) -> Result<()> {
    let listen = loaded.config.listen;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(
        &loaded.tls_certificate,
        &loaded.tls_key,
    )?));
    let service = Arc::new(Service::new(loaded)?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(%listen, "verifier listening (HTTPS)");
    eprintln!(
        "edgeward verifier: listening on https://{}",
        listener.local_addr()?
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        tokio::spawn(
            async move {
                let stream = match acceptor.accept(stream).await {
                    Ok(stream) => stream,
                    // A client that connects and leaves (a port probe) is not worth a warning.
                    Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                        tracing::debug!(%error, "connection closed before the TLS handshake");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "TLS handshake failed");
                        return;
                    }
                };
                let handler =
                    hyper::service::service_fn(move |request| respond(service.clone(), request));
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), handler)
                    .await
                {
                    tracing::debug!(%error, "connection ended with an error");
                }
            }
            .instrument(tracing::info_span!("request", %peer)),
        );
    }
    tracing::info!("verifier stopped");
    Ok(())
}
