//! TLS (feature `rustls`): the builder connects with rustls. The server's certificate is
//! self-signed on a development machine, so this test trusts any certificate; an application
//! passes its roots instead.

use std::sync::Arc;

use crate::common;
use dcbstore::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use dcbstore::rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use dcbstore::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use dcbstore::rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use dcbstore::{EventStore, PgEventStore};
use serde_json::json;

/// Accepts the server's certificate whoever signed it, still checking its signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, dcbstore::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, dcbstore::rustls::Error> {
        verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, dcbstore::rustls::Error> {
        verify_tls13_signature(
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

fn trusting_any_certificate() -> ClientConfig {
    let provider = Arc::new(dcbstore::rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth()
}

/// With `sslmode=require`, a store built with a TLS connector talks TLS on every pooled
/// connection (the server says so in `pg_stat_ssl`) and works as any other; a server without TLS
/// refuses with an error that says why.
#[tokio::test]
async fn the_builder_connects_over_tls() {
    let url = common::database_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}sslmode=require");
    let builder = PgEventStore::builder()
        .pool_size(2)
        .schema(&common::test_schema());
    let plain = common::store().await;
    let server_has_tls = {
        let client = plain.pool().get().await.unwrap();
        let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        ssl == "on"
    };
    let connected = builder
        .connect_with_rustls(&url, trusting_any_certificate())
        .await;
    if !server_has_tls {
        let err = connected.unwrap_err();
        assert!(
            err.to_string().contains("TLS") || err.to_string().contains("SSL"),
            "{err}"
        );
        return;
    }
    let store = common::emptied(connected.unwrap()).await;
    let client = store.pool().get().await.unwrap();
    let over_tls: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(over_tls, "the pooled connection does not use TLS");
    drop(client);
    let written = store
        .append([common::event("Encrypted", &["tls"], json!({}))], None)
        .await
        .unwrap();
    assert_eq!(written.positions().len(), 1);
}
