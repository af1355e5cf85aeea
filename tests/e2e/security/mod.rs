//! Attacks on a running Larder (issue 9), one test per hole: each reproduces the attack the way
//! the security review found it, and checks that it now fails safely. By attack surface:
//! bundles, the upstream, clients.

mod bundles;
mod clients;
mod upstream;

use crate::util::Larder;
use crate::util::http;

/// POSTs a legacy upload of `(filename, bytes)` for `name` 1.0 with `token`.
fn upload(server: &Larder, token: &str, name: &str, file: (&str, &[u8])) -> reqwest::blocking::Response {
    upload_to(&server.url("/legacy/"), token, name, file)
}

/// The same to any upload URL (a GitLab-style project's).
fn upload_to(url: &str, token: &str, name: &str, file: (&str, &[u8])) -> reqwest::blocking::Response {
    let (ct, body) = crate::util::multipart(&[("name", name), ("version", "1.0")], Some(file));
    http().post(url).basic_auth("x", Some(token)).header("content-type", ct).body(body).send().unwrap()
}
