//! wopfs: granted, overlaid views of a source tree for AI agents.
//!
//! The flow: a policy and a request resolve into a [`grant::Grant`]; the
//! grant's view ([`view::View`]) answers every filesystem request; the FUSE
//! adapter ([`fuse`]) and the mount lifecycle ([`mount`]) put it on a
//! mountpoint. See ARCHITECTURE.md for the map.

pub mod audit;
pub mod bucket;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod creds;
pub mod error;
pub mod fuse;
pub mod git;
pub mod grant;
pub mod host;
pub mod mount;
pub mod mountinfo;
pub mod overlay;
pub mod patch;
pub mod paths;
pub mod patterns;
pub mod policy;
pub mod run;
pub mod scope;
pub mod search;
pub mod serve;
pub mod session;
pub mod state;
pub mod token;
pub mod tree;
pub mod view;
pub mod walk;
