//! `serve --inspect-listen` and `ping --inspect`, without the sockets: the
//! SYN the server's kernel saved ([`syn`]), the report the server sends
//! back and how a UDP one is kept no larger than its request ([`report`]),
//! and the comparison the client makes of what it sent and what the server
//! saw ([`findings`]).

pub mod findings;
pub mod report;
pub mod syn;
