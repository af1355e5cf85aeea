//! Publishing for a platform team (issue 23): the audit log of every write, trusted
//! publishing from CI without long-lived tokens, retention and webhooks, each driven by the
//! real twine, uv and larder CLI.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::util::http_stub::HttpStub;
use crate::util::upstream::MockUpstream;
use crate::util::{Larder, assert_ok, http, larder_cli, twine, wheel};

const WRITE: &str = "ci-write-secret-1";
const READ: &str = "reader-secret-22";
const METRICS: &str = "metrics-secret-333";

fn upload_url(larder: &Larder, project: &str) -> String {
    larder.url(&format!("/api/v4/projects/{project}/packages/pypi"))
}

fn write_file(dir: &Path, (name, bytes): &(String, Vec<u8>)) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_string_lossy().into_owned()
}

/// The audit log's lines, parsed.
fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}")))
        .collect()
}

fn twine_upload(scratch: &Path, url: &str, password: &str, file: &str) -> std::process::Output {
    twine(scratch, &["upload", "--repository-url", url, "-u", "__token__", "-p", password, file])
}

/// Issue 23 part 3: uploads (accepted, refused for a reason, refused for the token), yank,
/// un-yank, delete, a block-list reload that worked and one that did not: each is one JSON
/// line with who, from where, the result and the reason; no secret anywhere in the log; the
/// pages for people show it to the holder of the metrics token only.
#[test]
fn every_write_is_one_audit_line_with_who_and_why_and_never_a_secret() {
    let up = MockUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("log/audit.jsonl");
    let config = dir.path().join("larder.toml");
    let write_config = |block: &str| {
        std::fs::write(
            &config,
            format!(
                r#"
audit_log = "{audit}"
metrics_token = "{METRICS}"
[[tokens]]
name = "ci"
secret = "{WRITE}"
scopes = ["write"]
projects = ["team"]
[[tokens]]
name = "reader"
secret = "{READ}"
scopes = ["read"]
{block}
"#,
                audit = audit.display()
            ),
        )
        .unwrap()
    };
    write_config("");
    let larder = Larder::start(
        &dir.path().join("data"),
        &["--upstream", &up.simple_url(), "--config", config.to_str().unwrap()],
    );
    let scratch = tempfile::tempdir().unwrap();
    let url = upload_url(&larder, "team");
    let whl = wheel("corp-audited", "1.0", &[]);
    let path = write_file(scratch.path(), &whl);
    let sha = crate::util::sha256_hex(&whl.1);
    assert_ok(&twine_upload(scratch.path(), &url, WRITE, &path), "twine upload");
    // The same filename with other bytes: refused for a reason (UPL-08).
    let other = scratch.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let changed = (whl.0.clone(), wheel("corp-audited", "1.0", &["idna"]).1);
    let changed_path = write_file(&other, &changed);
    assert!(!twine_upload(scratch.path(), &url, WRITE, &changed_path).status.success());
    // A read token, and no token at all.
    assert!(!twine_upload(scratch.path(), &url, READ, &path).status.success());
    let resp = http().post(&url).send().unwrap();
    assert_eq!(resp.status(), 401);
    // Yank, un-yank, delete through the CLI.
    let env = [("LARDER_TOKEN", WRITE)];
    let manage = |op: &str, extra: &[&str]| {
        let mut args = vec![op, "--server", &larder.base, "--project", "team"];
        args.extend_from_slice(extra);
        args.push(&whl.0);
        assert_ok(&larder_cli(&args, &env), op);
    };
    manage("yank", &["--reason", "broken build"]);
    manage("unyank", &[]);
    manage("delete", &[]);
    // SIGHUP: a list that parses, then one that does not.
    let hup = || {
        std::process::Command::new("kill").args(["-HUP", &larder.pid().to_string()]).status().unwrap();
    };
    write_config("[[block]]\nname = \"evil-pkg\"\nreason = \"malware\"\n");
    hup();
    crate::util::wait_until(std::time::Duration::from_secs(10), || audit_lines(&audit).len() >= 8);
    write_config("[[block]]\nname = \"\"\nreason = \"x\"\n");
    hup();
    crate::util::wait_until(std::time::Duration::from_secs(10), || audit_lines(&audit).len() >= 9);

    let lines = audit_lines(&audit);
    let summary: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            let who = l["who"]["name"].as_str().or(l["who"]["via"].as_str()).unwrap_or("-");
            (l["action"].as_str().unwrap().into(), who.into(), l["result"].as_str().unwrap().into())
        })
        .collect();
    let expected: Vec<(&str, &str, &str)> = vec![
        ("upload", "ci", "ok"),
        ("upload", "ci", "refused"),
        ("upload", "reader", "refused"),
        ("upload", "-", "refused"),
        ("yank", "ci", "ok"),
        ("unyank", "ci", "ok"),
        ("delete", "ci", "ok"),
        ("block_list_reload", "SIGHUP", "ok"),
        ("block_list_reload", "SIGHUP", "refused"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.into_iter().map(|(a, b, c)| (a.into(), b.into(), c.into())).collect();
    assert_eq!(summary, expected, "{lines:#?}");
    let first = &lines[0];
    assert_eq!(first["project"], "team");
    assert_eq!(first["filename"], whl.0.as_str());
    assert_eq!(first["sha256"], sha.as_str());
    assert_eq!(first["peer"], "127.0.0.1");
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert!(lines[1]["reason"].as_str().unwrap().contains("already exists"), "{}", lines[1]);
    assert!(lines[2]["reason"].as_str().unwrap().contains("no write access"), "{}", lines[2]);
    assert_eq!(lines[3]["who"]["kind"], "anonymous");
    assert_eq!(lines[4]["sha256"], sha.as_str());
    assert_eq!(lines[8]["reason"].as_str().map(|r| !r.is_empty()), Some(true));
    let raw = std::fs::read_to_string(&audit).unwrap();
    for secret in [WRITE, READ, METRICS] {
        assert!(!raw.contains(secret), "a secret in the audit log");
    }

    // The pages for people: the metrics token's holder only.
    let page = larder.url("/-/ui/audit");
    assert_eq!(http().get(&page).send().unwrap().status(), 401);
    assert_eq!(http().get(&page).bearer_auth(WRITE).send().unwrap().status(), 401);
    let resp = http().get(&page).bearer_auth(METRICS).send().unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().unwrap();
    assert!(html.contains(&whl.0) && html.contains("block_list_reload") && html.contains("token ci"), "{html}");
    assert!(html.find("block_list_reload").unwrap() < html.find("upload").unwrap(), "newest first");
}

/// A loopback OIDC issuer with its own P-256 key: discovery, the key set, and a stand-in for
/// GitHub's token endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL`), which signs `claims` with the
/// requested audience, a fresh `jti` and times.
struct Issuer {
    stub: HttpStub,
    key: jsonwebtoken::EncodingKey,
    claims: Arc<Mutex<serde_json::Value>>,
}

const KID: &str = "test-key-1";
/// A fixed 2048-bit RSA key (PKCS#1 DER, base64) for RS256 tokens, GitHub's algorithm; made
/// with `openssl genrsa` for these tests only.
const RSA_KEY: &str = concat!(
    "MIIEowIBAAKCAQEAndO9FEwAze80N5VDkfa10lIiXkeXhD8MaePuCXToMxqh4ti0a6ljQJ9T9IuoceZqIemFXKCcJGlRNk1T",
    "sEZLggGipd9X6gIhGVlrkGq+eRuP+aUulEY44cin+4oexkIJJfJkuPrIVFshMhj6PZRGf6iLic2gDQypcwQcgPR2AeDVJ6dY",
    "YYC78lDycv57cjnkIZdjig9HMBlVhR685r4BwOLKFYawGGUeqXQQTCscQM/b78/mkZMjqNAEqZnlL4QErOpBdtJO4L0LNgCS",
    "R1iOCGJk1ZYj56mdqVwgW/NBguwuW/Sqhx75DFbB0sYJVBodnHMxUeFvR+ywecGSidjJfQIDAQABAoIBACA1uU3uIO/mVJLP",
    "bKXaYssUphz1oW+E6oSl1supR0Y+tjE0psWeITpsCddLtUnhi2F2Zhg8UwF/WOqrJ1w/TGOw77/IcAm6+4RP4orrrgnLXTvG",
    "wVXTawJxUA8e5h7yFSngaTvzOnU0z/aIcHGm1Chzfl7WT0a6gc6OVT7gJUFGjkkzWgWQNE4U5s8A8EmpHWDZDVZUN2MXtmuc",
    "003Wu3i7NUN6pXxWhK2hFA8m7TTM4tPfYYCf/A4AGjGI+yENxNuYbqnqhFjOOl3KzgfV/kvgKhmGF+atJoloRmm9zGTU5+pm",
    "ZUobrBvKwWLlsShPrMNGJKfBmnq8Sss3verU58ECgYEAzX29Ui2FJFwwLEU1ArgcB8uah90BGnNgBj7GvGpFvRHHxkkpYzXg",
    "cwtVxrMGO6zyvzZNv1HGqkY+izv5jHfF68pr0feepctyIhgqGZu4xd1InAFgpO8nJ1YCUzsZY+wmc6c0iAdVvhOh3vI2hGzE",
    "/0f2JATIJ76F1CFgiAasQo0CgYEAxJ7M9xV89pLex+c9uTfNc7diR0ZbkGAGqhueP3ulZRk+dmptA92Fx7tUtYGVL10j4W7W",
    "q1D/FkIfZSWFnThFV+zwWlwEx/ghkIQobtu9+4sKqgnRIsbgzNQcRN54BLMOS2tNvWQcLgYbeWb7DDSfr+4vnLONHIDLB8O5",
    "4yFLXrECgYBqFu+mPKAPfJTWVkifBcRa9e/rEtud91DtCH38CnXEvihAo8b9VHRzkLeRJR4jsw+ETpnnG2YQxMFHiwg0UCXb",
    "rR7rQQckG5vqJEWgAPhtFuiEumVV4a56LXp30/wwzVuwu/NwAzFuN56LhstEpQ8zqMhYIivf8QoQ0caPk7pdhQKBgQCWxOaK",
    "uTF/qhOm2kzcUEv85aw411yzEs9JdbAdIeUr5vWcu/MoOZ+yDpXgMKODFDrFTMbTy2IvYTjNyL3yVwnlaEzOHS2VYVHrjUur",
    "5liCIJZm2OxDbJlIt4WN0cHaaKsXbgrIpZFuQUSkDTGIpHmm4FAmKxCTwLbvF0jdP9SZoQKBgB66mg3VJDlkXMvQ1A6OVLSm",
    "zyHFYJ6q0i8eACJvUbL5sRnCV1mPg/rKM5aBWgTRHkefOfB5U6OTH+2afm/IxZxaDW6GkLuAfuQzDdGw4pQ8poZk/amodluk",
    "iPShw1HibxSMAyVjcbtju6VXPMHL66xLW70OTNZ6ofHVnH+Ijxwo",
);
/// Its modulus, base64url, for the JWKS.
const RSA_N: &str = concat!(
    "ndO9FEwAze80N5VDkfa10lIiXkeXhD8MaePuCXToMxqh4ti0a6ljQJ9T9IuoceZqIemFXKCcJGlRNk1TsEZLggGipd9X6gIh",
    "GVlrkGq-eRuP-aUulEY44cin-4oexkIJJfJkuPrIVFshMhj6PZRGf6iLic2gDQypcwQcgPR2AeDVJ6dYYYC78lDycv57cjnk",
    "IZdjig9HMBlVhR685r4BwOLKFYawGGUeqXQQTCscQM_b78_mkZMjqNAEqZnlL4QErOpBdtJO4L0LNgCSR1iOCGJk1ZYj56md",
    "qVwgW_NBguwuW_Sqhx75DFbB0sYJVBodnHMxUeFvR-ywecGSidjJfQ",
);
const RSA_KID: &str = "test-rsa-key";

fn sign_rs256(claims: &serde_json::Value) -> String {
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.decode(RSA_KEY).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(RSA_KID.into());
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_rsa_der(&der)).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn p256_key() -> (jsonwebtoken::EncodingKey, serde_json::Value) {
    use base64::Engine;
    let pair = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
    let raw = pair.public_key_raw(); // 0x04 || x || y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        "use": "sig", "alg": "ES256"});
    (jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()), jwk)
}

fn sign(key: &jsonwebtoken::EncodingKey, kid: &str, claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

impl Issuer {
    fn start() -> Issuer {
        let (key, mut jwk) = p256_key();
        jwk["kid"] = KID.into();
        let claims: Arc<Mutex<serde_json::Value>> = Arc::default();
        let (signing, live) = (key.clone(), claims.clone());
        let base: Arc<Mutex<String>> = Arc::default();
        let own = base.clone();
        let stub = HttpStub::start(move |req| {
            let base = own.lock().unwrap().clone();
            let path = req.target.split('?').next().unwrap_or("");
            match path {
                "/.well-known/openid-configuration" => {
                    let doc = serde_json::json!({"issuer": base, "jwks_uri": format!("{base}/jwks")});
                    (200, "application/json", doc.to_string().into_bytes())
                }
                "/jwks" => {
                    let rsa = serde_json::json!({"kty": "RSA", "kid": RSA_KID, "alg": "RS256", "use": "sig",
                        "n": RSA_N, "e": "AQAB"});
                    (200, "application/json", serde_json::json!({"keys": [jwk, rsa]}).to_string().into_bytes())
                }
                "/token"
                    if req
                        .header("authorization")
                        .is_some_and(|a| a.eq_ignore_ascii_case("bearer runner-request-token")) =>
                {
                    let audience = req.target.split("audience=").nth(1).unwrap_or("").to_string();
                    let mut c = live.lock().unwrap().clone();
                    c["aud"] = audience.into();
                    c["iss"] = base.clone().into();
                    let t = now();
                    c["iat"] = t.into();
                    c["nbf"] = t.into();
                    c["exp"] = (t + 300).into();
                    c["jti"] = format!("{:016x}", rand_u64()).into();
                    let body = serde_json::json!({"count": 1, "value": sign(&signing, KID, &c)});
                    (200, "application/json", body.to_string().into_bytes())
                }
                _ => (404, "text/plain", b"not found".to_vec()),
            }
        });
        *base.lock().unwrap() = stub.base.clone();
        Issuer { stub, key, claims }
    }

    /// Claims as GitHub Actions sends them for `repository`'s `release.yml`.
    fn github(&self, repository: &str) -> serde_json::Value {
        serde_json::json!({
            "sub": format!("repo:{repository}:environment:pypi"),
            "repository": repository,
            "repository_owner": repository.split('/').next().unwrap(),
            "repository_owner_id": "101",
            "repository_id": "202",
            "job_workflow_ref": format!("{repository}/.github/workflows/release.yml@refs/tags/v1.0"),
            "ref": "refs/tags/v1.0",
            "environment": "pypi",
        })
    }

    /// A token signed by this issuer with these claims over the defaults (`iss`, `aud`, times, `jti`).
    fn token(&self, audience: &str, claims: serde_json::Value) -> String {
        let t = now();
        let mut c = self.github("acme/app");
        c["iss"] = self.stub.base.clone().into();
        c["aud"] = audience.into();
        c["iat"] = t.into();
        c["nbf"] = t.into();
        c["exp"] = (t + 300).into();
        c["jti"] = format!("{:016x}", rand_u64()).into();
        for (k, v) in claims.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        sign(&self.key, KID, &c)
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    h.finish()
}

/// Issue 23 part 1: the real `uv publish --trusted-publishing always` in a stand-in GitHub
/// Actions environment, against Larder over TLS, publishes without any stored token; the
/// minted token is burned after the upload. Refused: another repository, the wrong audience,
/// an expired token, an unknown key, a replayed `jti`, a minted token on another project or
/// for a yank. twine uploads with a minted token.
#[test]
fn uv_publishes_with_trusted_publishing_and_everything_else_is_refused() {
    let issuer = Issuer::start();
    *issuer.claims.lock().unwrap() = issuer.github("acme/app");
    // An issuer nobody answers for (a port closed again at once).
    let gone_issuer = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let up = MockUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, cert_pem, key_pem) = crate::util::test_tls(dir.path());
    let audit = dir.path().join("audit.jsonl");
    let config = dir.path().join("larder.toml");
    std::fs::write(
        &config,
        format!(
            r#"
audit_log = "{audit}"
oidc_audience = "larder-test"
[[trusted_publishers]]
name = "app-release"
issuer = "{issuer}"
repository = "acme/app"
workflow = "release.yml"
environment = "pypi"
projects = ["team"]
[[trusted_publishers]]
name = "gone"
issuer = "{gone}"
repository = "acme/app"
workflow = "release.yml"
projects = ["team"]
"#,
            audit = audit.display(),
            issuer = issuer.stub.base,
            gone = gone_issuer
        ),
    )
    .unwrap();
    let larder = Larder::start(
        &dir.path().join("data"),
        &[
            "--upstream",
            &up.simple_url(),
            "--config",
            config.to_str().unwrap(),
            "--tls-cert",
            cert_pem.to_str().unwrap(),
            "--tls-key",
            key_pem.to_str().unwrap(),
        ],
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca_pem).unwrap()).unwrap())
        .build()
        .unwrap();
    // No metrics_token here: the audit page does not exist (it names private files and clients).
    assert_eq!(client.get(larder.url("/-/ui/audit")).send().unwrap().status(), 404);
    let audience: serde_json::Value = client.get(larder.url("/_/oidc/audience")).send().unwrap().json().unwrap();
    assert_eq!(audience, serde_json::json!({"audience": "larder-test"}));

    // The real uv, as in a GitHub Actions job with `id-token: write`.
    let scratch = tempfile::tempdir().unwrap();
    let whl = wheel("corp-trusted", "1.0", &[]);
    let path = write_file(scratch.path(), &whl);
    let mut uv = crate::util::client("uv", scratch.path());
    uv.args(["publish", "--trusted-publishing", "always", "--publish-url", &upload_url(&larder, "team"), &path])
        .env("SSL_CERT_FILE", &ca_pem)
        .env("GITHUB_ACTIONS", "true")
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", format!("{}/token?api-version=2.0", issuer.stub.base))
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-request-token")
        .env_remove("UV_PUBLISH_TOKEN")
        .env_remove("UV_PUBLISH_PASSWORD");
    let out = crate::util::run(uv);
    assert_ok(&out, "uv publish --trusted-publishing always");
    let page: serde_json::Value = client
        .get(larder.url("/api/v4/projects/team/packages/pypi/simple/corp-trusted/"))
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(page["files"][0]["filename"], whl.0.as_str());
    let lines = audit_lines(&audit);
    let actions: Vec<&str> = lines.iter().map(|l| l["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["mint_token", "upload", "burn_token"], "{lines:#?}");
    for l in &lines {
        assert_eq!(l["who"]["kind"], "publisher", "{l}");
        assert_eq!(l["who"]["publisher"], "app-release");
        assert_eq!(l["who"]["subject"], "acme/app");
        assert_eq!(l["result"], "ok", "{l}");
    }
    assert!(lines[2].get("reason").is_none(), "uv burned a live token: {}", lines[2]);

    let mint = |jwt: &str| {
        let resp =
            client.post(larder.url("/_/oidc/mint-token")).json(&serde_json::json!({"token": jwt})).send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<serde_json::Value>().unwrap())
    };
    let refused = |jwt: &str, code: &str, says: &str| {
        let (status, body) = mint(jwt);
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["errors"][0]["code"], code, "{body}");
        let description = body["errors"][0]["description"].as_str().unwrap();
        assert!(description.contains(says), "{says}: {description}");
    };
    refused(
        &issuer.token("larder-test", serde_json::json!({"repository": "evil/app"})),
        "invalid-publisher",
        "`repository` is `evil/app`",
    );
    refused(
        &issuer.token(
            "larder-test",
            serde_json::json!({"job_workflow_ref": "acme/app/.github/workflows/ci.yml@refs/heads/x"}),
        ),
        "invalid-publisher",
        "job_workflow_ref",
    );
    refused(&issuer.token("pypi", serde_json::json!({})), "invalid-token", "does not verify");
    let past = now() - 3600;
    refused(
        &issuer.token("larder-test", serde_json::json!({"iat": past, "nbf": past, "exp": past + 300})),
        "invalid-token",
        "does not verify",
    );
    refused(&issuer.token("larder-test", serde_json::json!({"jti": null})), "invalid-token", "jti");
    let (other_key, _) = p256_key();
    let forged = sign(
        &other_key,
        "unknown-key",
        &serde_json::json!({"iss": issuer.stub.base, "aud": "larder-test",
        "exp": now() + 300, "jti": "x", "repository": "acme/app"}),
    );
    refused(&forged, "invalid-token", "no signing key `unknown-key`");
    let forged_kid = sign(
        &other_key,
        KID,
        &serde_json::json!({"iss": issuer.stub.base, "aud": "larder-test",
        "exp": now() + 300, "jti": "y", "repository": "acme/app"}),
    );
    refused(&forged_kid, "invalid-token", "does not verify");
    // An issuer whose keys cannot be fetched: 503, and not asked again at once.
    let (other_key, _) = p256_key();
    let to_gone = sign(
        &other_key,
        "k",
        &serde_json::json!({"iss": gone_issuer, "aud": "larder-test",
        "exp": now() + 300, "jti": "g", "repository": "acme/app"}),
    );
    for _ in 0..2 {
        let (status, body) = mint(&to_gone);
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["errors"][0]["code"], "issuer-unavailable", "{body}");
    }
    assert_eq!(larder.log().matches("cannot fetch an OIDC issuer's keys").count(), 1, "{}", larder.log());
    // Replayed: the same token twice.
    let once = issuer.token("larder-test", serde_json::json!({}));
    let (status, body) = mint(&once);
    assert_eq!(status, 200, "{body}");
    refused(&once, "invalid-token", "already exchanged");
    let minted = body["token"].as_str().unwrap().to_string();
    assert!(minted.starts_with("larder-oidc-"));
    // RS256, as GitHub signs: accepted the same way.
    let mut claims = issuer.github("acme/app");
    for (k, v) in [
        ("iss", serde_json::json!(issuer.stub.base)),
        ("aud", "larder-test".into()),
        ("exp", (now() + 300).into()),
        ("iat", now().into()),
        ("jti", "rsa-1".into()),
    ] {
        claims[k] = v;
    }
    let (status, body) = mint(&sign_rs256(&claims));
    assert_eq!(status, 200, "RS256: {body}");

    // twine with the minted token: to its project, yes; to another project, or a yank, no.
    let cert = ["--cert", ca_pem.to_str().unwrap()];
    let second = wheel("corp-trusted", "1.1", &[]);
    let second_path = write_file(scratch.path(), &second);
    let twine_to = |project: &str, file: &str| {
        let mut args = vec!["upload", "--repository-url"];
        let url = upload_url(&larder, project);
        args.push(&url);
        args.extend_from_slice(&["-u", "__token__", "-p", &minted]);
        args.extend_from_slice(&cert);
        args.push(file);
        twine(scratch.path(), &args)
    };
    assert_ok(&twine_to("team", &second_path), "twine with a minted token");
    let out = twine_to("other", &second_path);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("403") || String::from_utf8_lossy(&out.stderr).contains("403")
    );
    let sha = crate::util::sha256_hex(&second.1);
    let yank = client
        .post(larder.url(&format!("/api/v4/projects/team/packages/pypi/files/{sha}/{}/yank", second.0)))
        .basic_auth("__token__", Some(&minted))
        .send()
        .unwrap();
    assert_eq!(yank.status(), 403);
    // Burned: refused at once.
    let burn =
        client.post(larder.url("/_/oidc/burn-token")).json(&serde_json::json!({"token": minted})).send().unwrap();
    assert_eq!(burn.status(), 200);
    let third = write_file(scratch.path(), &wheel("corp-trusted", "1.2", &[]));
    let out = twine_to("team", &third);
    assert!(!out.status.success(), "a burned token still uploads");
    // The issuer's keys were fetched once and cached; the made-up `kid` did not refetch them
    // (at most once a minute per issuer).
    let asked = issuer.stub.requests();
    let key_fetches = asked.iter().filter(|r| r.method == "GET" && r.target == "/jwks" && r.body.is_empty()).count();
    assert_eq!(key_fetches, 1, "{asked:?}");
    let raw = std::fs::read_to_string(&audit).unwrap();
    assert!(!raw.contains(&minted), "a minted secret in the audit log");
    assert!(!raw.contains(&once), "an OIDC token in the audit log");
    assert!(!larder.log().contains(&minted), "a minted secret in the server log");
}

fn page_files(larder: &Larder, project: &str, name: &str) -> Vec<String> {
    let page: serde_json::Value =
        crate::util::json_page(&larder.url(&format!("/api/v4/projects/{project}/packages/pypi/simple/{name}/")), None);
    page["files"].as_array().unwrap().iter().map(|f| f["filename"].as_str().unwrap().to_string()).collect()
}

/// Issue 23 part 4: `larder retention --dry-run` prints what the policy lets go and deletes
/// nothing; without it the old versions and the old pre-release go (audited, tombstoned: the
/// filename cannot come back), the newest versions and every upstream-cached file stay; the
/// background job applies it too. Each upload and delete reaches the webhook signed with
/// HMAC-SHA256, retried after a failure, and a receiver that stalls does not delay uploads.
#[test]
fn retention_deletes_what_the_policy_lets_go_and_webhooks_announce_it_signed() {
    const HOOK_SECRET: &str = "webhook-signing-secret-0123";
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first = stalled.clone();
    let hook = HttpStub::start(move |_| {
        if !first.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_secs(5)); // slow, then a failure: retried
            return (500, "text/plain", b"try again".to_vec());
        }
        (200, "text/plain", b"ok".to_vec())
    });
    let (up, _) = crate::util::upstream::upstream_with_app();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let config = dir.path().join("larder.toml");
    let write_config = |keep: usize, interval: &str| {
        std::fs::write(
            &config,
            format!(
                r#"
audit_log = "{audit}"
retention_interval = "{interval}"
[[tokens]]
name = "ci"
secret = "{WRITE}"
scopes = ["write"]
[projects.team]
retention = {{ keep_versions = {keep}, delete_prereleases_after = "1s" }}
[[webhooks]]
name = "chat"
url = "{hook}/hook"
events = ["upload", "delete"]
secret_env = "TEST_HOOK_SECRET"
"#,
                audit = audit.display(),
                hook = hook.base
            ),
        )
        .unwrap()
    };
    write_config(3, "1h");
    let start = || {
        Larder::start_with_env(
            &dir.path().join("data"),
            &["--upstream", &up.simple_url(), "--config", config.to_str().unwrap()],
            &[("TEST_HOOK_SECRET", HOOK_SECRET)],
        )
    };
    let larder = start();
    let scratch = tempfile::tempdir().unwrap();
    let versions = ["1.0", "1.1", "1.2", "1.3b1", "2.0a1"];
    let files: Vec<String> = versions.iter().map(|v| write_file(scratch.path(), &wheel("corp-kept", v, &[]))).collect();
    let mut args = vec!["upload", "--repository-url"];
    let url = upload_url(&larder, "team");
    args.push(&url);
    args.extend_from_slice(&["-u", "__token__", "-p", WRITE]);
    args.extend(files.iter().map(String::as_str));
    let started = std::time::Instant::now();
    assert_ok(&twine(scratch.path(), &args), "twine upload of five versions");
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "a stalled webhook delayed the uploads");
    // An upstream file read through the same project: retention never touches it.
    let app = page_files(&larder, "team", "app");
    assert_eq!(app.len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // the pre-releases are now "old"

    let env = [("LARDER_TOKEN", WRITE)];
    let dry = larder_cli(&["retention", "--server", &larder.base, "--project", "team", "--dry-run"], &env);
    assert_ok(&dry, "larder retention --dry-run");
    let said = String::from_utf8_lossy(&dry.stdout).to_string();
    for gone in ["corp_kept-1.0-", "corp_kept-1.1-", "corp_kept-1.3b1-"] {
        assert!(said.lines().any(|l| l.starts_with("would delete") && l.contains(gone)), "{gone}: {said}");
    }
    assert!(said.contains("older than the newest 3 versions") && said.contains("pre-release"), "{said}");
    assert!(!said.contains("1.2-") && !said.contains("2.0a1-"), "{said}");
    assert_eq!(page_files(&larder, "team", "corp-kept").len(), 5, "a dry run deletes nothing");

    // A dry run asked for in a way Larder does not know is refused, never taken as "no".
    let odd = http()
        .post(larder.url("/api/v4/projects/team/packages/pypi/-/retention?dry_run=yes"))
        .basic_auth("x", Some(WRITE))
        .send()
        .unwrap();
    assert_eq!(odd.status(), 400);
    assert_eq!(page_files(&larder, "team", "corp-kept").len(), 5);
    let run = larder_cli(&["retention", "--server", &larder.base, "--project", "team"], &env);
    assert_ok(&run, "larder retention");
    let kept = page_files(&larder, "team", "corp-kept");
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().any(|f| f.contains("-1.2-")) && kept.iter().any(|f| f.contains("-2.0a1-")), "{kept:?}");
    assert_eq!(page_files(&larder, "team", "app"), app, "upstream-cached files stay");
    // Tombstoned: the deleted filename cannot be uploaded again.
    let again = twine(scratch.path(), &["upload", "--repository-url", &url, "-u", "__token__", "-p", WRITE, &files[0]]);
    assert!(!again.status.success(), "a deleted filename was accepted again");
    let lines = audit_lines(&audit);
    let deletes: Vec<&serde_json::Value> = lines.iter().filter(|l| l["action"] == "delete").collect();
    assert_eq!(deletes.len(), 3, "{lines:#?}");
    assert!(
        deletes.iter().all(|l| l["who"]["name"] == "ci" && l["reason"].as_str().unwrap().starts_with("retention: "))
    );
    let runs: Vec<&serde_json::Value> = lines.iter().filter(|l| l["action"] == "retention").collect();
    assert_eq!(runs.len(), 2, "the dry run and the run");
    assert!(runs[0]["reason"].as_str().unwrap().contains("dry run: 3 files"), "{}", runs[0]);

    // The background job, every second, with a stricter policy after a restart (once the
    // webhook has had what this process queued: 5 uploads, one of them twice, 3 deletes). A
    // final 2.0 arrives: 2.0a1 and 1.2 (until now the newest final release) go.
    crate::util::wait_until(std::time::Duration::from_secs(30), || hook.requests().len() >= 9);
    drop(larder);
    write_config(1, "1s");
    let larder = start();
    let url = upload_url(&larder, "team");
    let final_release = write_file(scratch.path(), &wheel("corp-kept", "2.0", &[]));
    let out =
        twine(scratch.path(), &["upload", "--repository-url", &url, "-u", "__token__", "-p", WRITE, &final_release]);
    assert_ok(&out, "2.0");
    crate::util::wait_until(std::time::Duration::from_secs(15), || page_files(&larder, "team", "corp-kept").len() == 1);
    assert!(page_files(&larder, "team", "corp-kept")[0].contains("-2.0-"));
    let by_job = audit_lines(&audit)
        .into_iter()
        .filter(|l| l["action"] == "delete" && l["who"]["kind"] == "server" && l["who"]["job"] == "retention")
        .count();
    assert_eq!(by_job, 2);
    // A burst of versions (a leaked upload token uploading bogus ones): the job would delete 6
    // of 7 files at once, so it holds back and says so; an operator's run confirms it.
    let burst: Vec<String> =
        (1..=7).map(|v| write_file(scratch.path(), &wheel("corp-burst", &format!("{v}.0"), &[]))).collect();
    let mut args = vec!["upload", "--repository-url", &url, "-u", "__token__", "-p", WRITE];
    args.extend(burst.iter().map(String::as_str));
    assert_ok(&twine(scratch.path(), &args), "seven versions");
    crate::util::wait_until(std::time::Duration::from_secs(15), || {
        audit_lines(&audit).iter().any(|l| {
            l["action"] == "retention"
                && l["result"] == "refused"
                && l["reason"].as_str().unwrap().contains("corp-burst")
        })
    });
    assert_eq!(page_files(&larder, "team", "corp-burst").len(), 7, "held back");
    assert_ok(&larder_cli(&["retention", "--server", &larder.base, "--project", "team"], &env), "confirmed");
    assert_eq!(page_files(&larder, "team", "corp-burst").len(), 1);

    // The webhook: 6 uploads and 5 deletes of corp-kept, each signed; the first one retried
    // after its 500 (and corp-burst's 7 uploads and 6 deletes).
    crate::util::wait_until(std::time::Duration::from_secs(10), || hook.requests().len() >= 12 + 13);
    let received = hook.requests();
    let mut deliveries = std::collections::BTreeMap::new();
    for r in &received {
        assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", "/hook"));
        let expected = larder_signature_of(HOOK_SECRET, &r.body);
        assert_eq!(r.header("x-larder-signature"), Some(expected.as_str()), "signature");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.header("x-larder-event"), body["event"].as_str());
        assert_eq!(body["project"], "team");
        *deliveries.entry(body["delivery"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    let events: Vec<String> = received
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap())
        .filter(|b| b["filename"].as_str().unwrap().starts_with("corp_kept"))
        .map(|b| b["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events.iter().filter(|e| *e == "upload").count(), 7, "6 uploads, the first twice: {events:?}");
    assert_eq!(events.iter().filter(|e| *e == "delete").count(), 5, "{events:?}");
    assert_eq!(deliveries.values().filter(|n| **n == 2).count(), 1, "one delivery retried: {deliveries:?}");
    let metrics = http().get(larder.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("larder_webhook_deliveries_total") && l.contains("result=\"delivered\"")),
        "{metrics}"
    );
    // The signature covers the whole body: one byte changed, and it no longer matches.
    let mut tampered = received[1].body.clone();
    tampered.push(b' ');
    assert_ne!(received[1].header("x-larder-signature"), Some(larder_signature_of(HOOK_SECRET, &tampered).as_str()));
    assert_eq!(
        received[1].header("x-larder-signature"),
        Some(larder_signature_of(HOOK_SECRET, &received[1].body).as_str())
    );
}

fn larder_signature_of(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Replicas on one bucket (issue 23 with issue 13): a token minted through one replica uploads
/// through another, a burn through either revokes it on both, a JWT exchanged on one is a
/// replay on the other, and every replica's audit events are objects under `<prefix>/audit/`,
/// so each replica's audit page shows them all.
#[test]
fn replicas_share_minted_tokens_used_jtis_and_the_audit_trail() {
    use crate::util::s3::S3Server;
    let issuer = Issuer::start();
    let s3 = S3Server::start();
    let up = MockUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("larder.toml");
    std::fs::write(
        &config,
        format!(
            r#"
metrics_token = "{METRICS}"
[[trusted_publishers]]
issuer = "{issuer}"
repository = "acme/app"
workflow = "release.yml"
projects = ["team"]
"#,
            issuer = issuer.stub.base
        ),
    )
    .unwrap();
    let mut args = s3.args("pub");
    args.extend(["--upstream".into(), up.simple_url(), "--config".into(), config.to_string_lossy().into_owned()]);
    let a = s3.larder(&args, &dir.path().join("a"), WRITE);
    let b = s3.larder(&args, &dir.path().join("b"), WRITE);
    let mint = |larder: &Larder, jwt: &str| {
        let resp =
            http().post(larder.url("/_/oidc/mint-token")).json(&serde_json::json!({"token": jwt})).send().unwrap();
        (resp.status().as_u16(), resp.json::<serde_json::Value>().unwrap())
    };
    let jwt = issuer.token("larder", serde_json::json!({}));
    let (status, body) = mint(&a, &jwt);
    assert_eq!(status, 200, "{body}");
    let minted = body["token"].as_str().unwrap().to_string();
    let (status, body) = mint(&b, &jwt);
    assert_eq!(status, 422, "the same JWT on the other replica is a replay: {body}");
    assert!(body["errors"][0]["description"].as_str().unwrap().contains("already exchanged"), "{body}");

    let scratch = tempfile::tempdir().unwrap();
    let upload = |larder: &Larder, version: &str| {
        let path = write_file(scratch.path(), &wheel("corp-replicated", version, &[]));
        twine_upload(scratch.path(), &upload_url(larder, "team"), &minted, &path)
    };
    assert_ok(&upload(&b, "1.0"), "a token minted on A, used on B");
    let burn = http().post(b.url("/_/oidc/burn-token")).json(&serde_json::json!({"token": minted})).send().unwrap();
    assert_eq!(burn.status(), 200);
    assert!(!upload(&a, "1.1").status.success(), "burned on B, still accepted on A");

    // A's audit page lists B's events too (mint on A; upload and burn on B).
    crate::util::wait_until(std::time::Duration::from_secs(10), || {
        let html = http().get(a.url("/-/ui/audit")).bearer_auth(METRICS).send().unwrap().text().unwrap();
        html.contains("mint_token") && html.contains("burn_token") && html.contains("corp_replicated-1.0")
    });
}
