//! str0m's crypto provider with one DTLS configuration per process instead of one per `Rtc`.
//!
//! str0m 0.25's aws-lc-rs provider builds a fresh `dimpl::Config` for every peer connection, and
//! building one runs dimpl's crypto self-test (`CryptoProvider::validate`: key exchanges,
//! signatures, AEAD round trips), about 80 % of what creating an `Rtc` cost. The configuration is
//! immutable and the same for every connection (no server cookie: ICE already proved the
//! client's address; the MTU str0m asks for), so it is built once and shared; each connection
//! still runs its own handshake. Everything else (SRTP, hashes, certificates) stays str0m's.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use str0m::config::CryptoProvider;
use str0m::crypto::CryptoError;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};

static SHARED: OnceLock<SharedDtls> = OnceLock::new();

/// str0m's provider from its feature flags, DTLS contexts built from a shared configuration.
pub(crate) fn crypto_provider() -> CryptoProvider {
    let mut provider = str0m::crypto::from_feature_flags();
    let inner = provider.dtls_provider;
    provider.dtls_provider = SHARED.get_or_init(|| SharedDtls {
        inner,
        configs: Mutex::new(Vec::new()),
    });
    provider
}

struct SharedDtls {
    /// str0m's own provider, for certificates.
    inner: &'static dyn DtlsProvider,
    /// Built configurations by MTU (str0m asks with the same one every time).
    configs: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>>,
}

impl fmt::Debug for SharedDtls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedDtls").finish_non_exhaustive()
    }
}

impl SharedDtls {
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        let mut configs = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, config)) = configs.iter().find(|(m, _)| *m == mtu) {
            return Ok(config.clone());
        }
        let mut builder = dimpl::Config::builder().use_server_cookie(false);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config = Arc::new(builder.build().map_err(CryptoError::DtlsImpl)?);
        configs.push((mtu, config.clone()));
        Ok(config)
    }
}

impl DtlsProvider for SharedDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let cert = cert.clone();
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => return Err(CryptoError::Other(format!("unsupported DTLS version: {other}"))),
        };
        Ok(Box::new(Instance(dtls)))
    }
}

/// One connection's DTLS state machine.
struct Instance(dimpl::Dtls);

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance").finish_non_exhaustive()
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_built_once_per_mtu() {
        let provider = crypto_provider();
        let cert = provider.dtls_provider.generate_certificate().unwrap();
        let now = Instant::now();
        for _ in 0..3 {
            provider
                .dtls_provider
                .new_dtls(&cert, now, DtlsVersion::Dtls12, Some(1150))
                .unwrap();
        }
        provider
            .dtls_provider
            .new_dtls(&cert, now, DtlsVersion::Auto, None)
            .unwrap();
        let shared = crypto_provider();
        // The same static provider every time, holding one configuration per MTU asked for.
        assert!(std::ptr::addr_eq(shared.dtls_provider, provider.dtls_provider));
        let configs = SHARED.get().unwrap().configs.lock().unwrap();
        assert_eq!(configs.iter().filter(|(m, _)| *m == Some(1150)).count(), 1);
        assert!(configs.iter().any(|(m, _)| m.is_none()));
    }
}
