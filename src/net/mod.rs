//! The network edge: HTTP routes and the WebSocket upgrade ([`http`]), and
//! the task that serves one WebSocket ([`connection`]).

pub mod connection;
pub(crate) mod edge;
pub mod http;
