//! Several upstreams, one owner per name (issue 14): a project name is served from the first
//! `[[upstreams]]` entry whose patterns match it, else from the default upstream, and never
//! from two at once. Merging indexes is what dependency-confusion attacks exploit, and what
//! uv's "first index wins" rule exists to prevent; routing by name makes the merge impossible.

use crate::index::{NamePattern, ProjectName};

use super::{Upstream, UpstreamSettings};

/// The name of the upstream set with `upstream = …` (or `--upstream`).
pub const DEFAULT: &str = "default";

/// One upstream as configured: its name, the names it owns, and its settings.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    pub name: String,
    /// Empty for the default upstream, which owns every name no other entry matches.
    pub projects: Vec<NamePattern>,
    pub settings: UpstreamSettings,
}

/// One upstream and its client (`None` offline: the routing still decides which stored pages
/// belong to which upstream).
pub struct Route {
    pub name: String,
    pub projects: Vec<NamePattern>,
    pub client: Option<Upstream>,
}

/// Every configured upstream, in the order names are matched.
#[derive(Default)]
pub struct Upstreams {
    routes: Vec<Route>,
    default: Option<Route>,
}

impl Upstreams {
    /// Builds a client per upstream, unless `offline`.
    pub fn new(routes: &[RouteConfig], default: Option<&RouteConfig>, offline: bool) -> anyhow::Result<Upstreams> {
        let build = |c: &RouteConfig| -> anyhow::Result<Route> {
            let client = if offline { None } else { Some(Upstream::new(c.settings.clone(), &c.name)?) };
            Ok(Route { name: c.name.clone(), projects: c.projects.clone(), client })
        };
        Ok(Upstreams {
            routes: routes.iter().map(build).collect::<anyhow::Result<_>>()?,
            default: default.map(build).transpose()?,
        })
    }

    /// The upstream that owns `name`: the first whose patterns match, else the default.
    pub fn owner(&self, name: &ProjectName) -> Option<&Route> {
        self.routes.iter().find(|r| r.projects.iter().any(|p| p.matches(name))).or(self.default.as_ref())
    }

    /// The client for `name`'s owner, when it has one (not offline, some upstream owns it).
    pub fn client(&self, name: &ProjectName) -> Option<&Upstream> {
        self.owner(name)?.client.as_ref()
    }

    /// Whether any upstream can be contacted.
    pub fn any_client(&self) -> bool {
        self.all().any(|r| r.client.is_some())
    }

    pub fn all(&self) -> impl Iterator<Item = &Route> {
        self.default.iter().chain(&self.routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, patterns: &[&str]) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            projects: patterns.iter().map(|p| NamePattern::parse(p).unwrap()).collect(),
            settings: UpstreamSettings {
                base: url::Url::parse(&format!("http://127.0.0.1:1/{name}/")).unwrap(),
                credentials: None,
                timeout: std::time::Duration::from_secs(1),
                max_connections: 1,
                max_page_bytes: 1,
                max_page_files: 1,
                max_file_bytes: 1,
            },
        }
    }

    #[test]
    fn one_owner_per_name_first_match_wins() {
        let routes = [route("vendor", &["torch", "nvidia-*"]), route("mirror", &["torch*", "numpy"])];
        let ups = Upstreams::new(&routes, Some(&route(DEFAULT, &[])), true).unwrap();
        let owner = |n: &str| ups.owner(&ProjectName::parse(n).unwrap()).map(|r| r.name.clone());
        assert_eq!(owner("Torch").as_deref(), Some("vendor"));
        assert_eq!(owner("torchvision").as_deref(), Some("mirror"));
        assert_eq!(owner("nvidia_cudnn").as_deref(), Some("vendor"));
        assert_eq!(owner("numpy").as_deref(), Some("mirror"));
        assert_eq!(owner("requests").as_deref(), Some(DEFAULT));
        assert!(!ups.any_client(), "offline: no clients");
        let no_default = Upstreams::new(&routes, None, true).unwrap();
        assert!(no_default.owner(&ProjectName::parse("requests").unwrap()).is_none());
    }
}
