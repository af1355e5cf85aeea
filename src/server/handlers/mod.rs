//! Request handlers, one file per endpoint family.

pub mod files;
pub mod health;
pub mod manage;
pub mod oidc;
pub mod osv;
pub mod pypi_json;
pub mod simple;
pub mod ui;
pub mod upload;
