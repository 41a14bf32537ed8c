//! How bytes reach the connection core other than by plain copies:
//! [`tls`] (`--tls-listen`) and [`splice`] (`--zero-copy`).

pub(crate) mod splice;
pub(crate) mod tls;
