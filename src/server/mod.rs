//! The serving side: building a configuration generation, the sockets, the worker
//! threads and their poll loops. Only this module touches sockets.

pub mod build;
pub mod handler;
pub mod socket;
pub mod stream;
pub mod upstream;
pub mod worker;

pub use build::{BuildOptions, Server};
