//! `edgeward tsa serve`: a small RFC 3161 TSA for tests and demos, answering
//! `POST /api/v1/timestamp` (application/timestamp-query) and
//! `GET /api/v1/timestamp/certchain` like the platform's sigstore timestamp server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use tracing::{info, info_span, warn, Instrument};

#[derive(Subcommand)]
pub enum TsaCommand {
    /// Serve time-stamps over HTTP.
    Serve {
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        /// The TSA certificate (PEM; extended key usage time-stamping, critical).
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// Its P-256 key (PKCS#8 PEM).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Certificates above it, up to the root (PEM).
        #[arg(long, value_name = "FILE")]
        chain: Option<PathBuf>,
    },
}

fn ders(text: &str) -> Result<Vec<Vec<u8>>> {
    Ok(pem::parse_many(text)?
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect())
}

pub fn run(command: TsaCommand) -> Result<()> {
    let TsaCommand::Serve {
        listen,
        cert,
        key,
        chain,
    } = command;
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let cert_pem = read(&cert)?;
    let chain_pem = chain.as_ref().map(read).transpose()?.unwrap_or_default();
    let certificate = ders(&cert_pem)?
        .into_iter()
        .next()
        .context("--cert holds no certificate")?;
    let key = pem::parse(read(&key)?).context("--key is not PEM")?;
    let tsa = edgeward_proof::timestamp::Tsa::new(certificate, ders(&chain_pem)?, key.contents())?;
    let state = Arc::new(Server {
        tsa,
        chain_pem: format!("{}\n{}", cert_pem.trim_end(), chain_pem.trim_end()),
        // Serials unique across restarts: nanoseconds at start, then counting.
        serial: AtomicU64::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos() as u64 >> 1)
                .unwrap_or(1),
        ),
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            info!(%listen, "TSA listening");
            eprintln!("edgeward tsa: listening on http://{}", listener.local_addr()?);
            loop {
                let (stream, peer) = listener.accept().await?;
                let state = state.clone();
                tokio::spawn(
                    async move {
                        let service = hyper::service::service_fn(move |request| {
                            let state = state.clone();
                            async move { Ok::<_, std::convert::Infallible>(state.answer(request).await) }
                        });
                        if let Err(error) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                        {
                            warn!(%error, "connection failed");
                        }
                    }
                    .instrument(info_span!("request", %peer)),
                );
            }
        })
}

struct Server {
    tsa: edgeward_proof::timestamp::Tsa,
    chain_pem: String,
    serial: AtomicU64,
}

fn reply(status: StatusCode, kind: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = kind.parse() {
        response.headers_mut().insert("content-type", value);
    }
    response
}

impl Server {
    async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        match (request.method(), request.uri().path()) {
            (&Method::POST, "/api/v1/timestamp") => {
                let body = match http_body_util::Limited::new(request.into_body(), 64 * 1024)
                    .collect()
                    .await
                {
                    Ok(body) => body.to_bytes(),
                    Err(_) => {
                        return reply(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "text/plain",
                            b"request too large\n".to_vec(),
                        )
                    }
                };
                let serial = self.serial.fetch_add(1, Ordering::Relaxed);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| elapsed.as_secs())
                    .unwrap_or(0);
                let answer = self.tsa.respond(&body, serial, now);
                info!(serial, bytes = answer.len(), "time-stamp answered");
                reply(StatusCode::OK, "application/timestamp-reply", answer)
            }
            (&Method::GET, "/api/v1/timestamp/certchain") => reply(
                StatusCode::OK,
                "application/pem-certificate-chain",
                self.chain_pem.clone().into_bytes(),
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"POST /api/v1/timestamp\n".to_vec(),
            ),
        }
    }
}
