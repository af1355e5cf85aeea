//! The cache engine: project pages, private uploads, metadata links, downloads from upstream.

pub mod fill;
pub mod links;
pub mod pages;
pub mod private;
pub mod records;
