pub mod error;
pub mod paths;
pub mod patterns;
pub mod policy;
pub mod host;
pub mod grant;
pub mod state;
