//! HTTPS for the status server: the rustls configuration it serves with. The accept loop,
//! its connection caps and the bounded TLS handshakes are in `io::http::serve`.

use std::sync::Arc;

/// The rustls server configuration with ALPN `http/1.1` (the server speaks HTTP/1 only).
pub fn http_server_config(base: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut config = base.clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
