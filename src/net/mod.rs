//! The network edge: HTTP routes and the WebSocket upgrade ([`http`]), the
//! operator's page and admin API ([`admin`]), and the task that serves one
//! WebSocket ([`connection`]).

pub mod admin;
pub mod connection;
pub(crate) mod edge;
pub mod http;
