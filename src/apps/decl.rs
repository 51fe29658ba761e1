//! What `--app` declares, and the plan for each app that `start` runs.
//!
//! `--app ROUTE=APP_ROOT` (repeatable) names an app and where its requests
//! come from (see `routes.rs` for ROUTE). The same flag takes a JSON object
//! for the options an app may have of its own, which is how a settings
//! file lists apps:
//!
//! ```json
//! {"apps": [{"route": "shop.example.com", "root": "../shop",
//!           "environment": "production", "min_instances": 1}]}
//! ```
//!
//! Whatever an app does not set comes from the instance's own options
//! (`--environment`, `--envvar`, `--spawn-method`, `--memory-limit`,
//! `--user`, `--warmup-request`: give an app its own `warmup_requests`
//! when its paths differ from APP_ROOT's app), except `min_instances`: with several apps each defaults to 0,
//! so an app nobody visits gives its processes back to the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::routes::Route;
use crate::cli::StartArgs;
use crate::config::{SpawnMethod, Warmup, WarmupRequest};

/// One `--app` value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppDecl {
    /// `default`, `HOST`, `*.DOMAIN`, `/PREFIX` or `HOST/PREFIX`.
    pub route: String,
    /// Relative to the instance's APP_ROOT.
    pub root: PathBuf,
    /// For logs, `status` and metrics; default: the root's directory name.
    pub name: Option<String>,
    pub environment: Option<String>,
    #[serde(default)]
    pub envvars: BTreeMap<String, String>,
    pub spawn_method: Option<SpawnMethod>,
    pub min_instances: Option<usize>,
    /// At most this many of the instance's `--max-pool-size` processes.
    pub max_instances: Option<usize>,
    /// MB, as `--memory-limit`.
    pub memory_limit: Option<u64>,
    pub user: Option<String>,
    /// `--warmup-request` values for this app's preloader (its own paths:
    /// the instance's list is meant for APP_ROOT's app).
    pub warmup_requests: Option<Vec<String>>,
}

/// Parses `ROUTE=APP_ROOT` or a JSON object (clap's value parser).
pub fn parse(s: &str) -> Result<AppDecl, String> {
    let decl = match s.trim_start().starts_with('{') {
        true => serde_json::from_str::<AppDecl>(s).map_err(|e| format!("{e}"))?,
        false => {
            let Some((route, root)) = s.split_once('=') else {
                return Err(format!(
                    "expected ROUTE=APP_ROOT (default=., example.com=/srv/shop, /blog=../blog), got {s:?}"
                ));
            };
            AppDecl {
                route: route.to_string(),
                root: PathBuf::from(root),
                name: None,
                environment: None,
                envvars: BTreeMap::new(),
                spawn_method: None,
                min_instances: None,
                max_instances: None,
                memory_limit: None,
                user: None,
                warmup_requests: None,
            }
        }
    };
    Route::parse(&decl.route)?;
    for r in decl.warmup_requests.iter().flatten() {
        WarmupRequest::parse(r)?;
    }
    if decl.root.as_os_str().is_empty() {
        return Err(format!("{s:?}: the app root is empty"));
    }
    Ok(decl)
}

/// Everything `start` needs to know about one app.
#[derive(Debug, Clone)]
pub struct AppPlan {
    pub name: String,
    pub root: PathBuf,
    pub rackup: PathBuf,
    pub route: Route,
    pub environment: String,
    pub envvars: Vec<(String, String)>,
    pub spawn_method: SpawnMethod,
    pub min_instances: usize,
    pub max_instances: usize,
    /// MB; 0 = none.
    pub memory_limit: u64,
    pub user: Option<String>,
    /// What its preloader serves before the first fork.
    pub warmup: Warmup,
}

impl AppPlan {
    /// The environment an app's processes get on top of the front end's.
    pub fn app_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = ["RACK_ENV", "RAILS_ENV", "APP_ENV"]
            .iter()
            .map(|k| (k.to_string(), self.environment.clone()))
            .collect();
        env.extend(self.envvars.iter().cloned());
        env
    }
}

/// The apps an instance serves: the `--app` list, or APP_ROOT alone.
pub fn plan(args: &StartArgs) -> Result<Vec<AppPlan>> {
    let base = args
        .app_root
        .canonicalize()
        .with_context(|| format!("app root {} does not exist", args.app_root.display()))?;
    if args.apps.is_empty() {
        return Ok(vec![AppPlan {
            name: crate::config::AppSpec::app_name_of(&base),
            rackup: rackup_of(&base)?,
            root: base,
            route: Route::parse("default").expect("a valid route"),
            environment: args.environment.clone(),
            envvars: args.envvars.clone(),
            spawn_method: args.spawn_method,
            min_instances: args.min_instances,
            max_instances: args.max_pool_size,
            memory_limit: args.memory_limit,
            user: args.user.clone(),
            warmup: args.preload.warmup(),
        }]);
    }
    let mut plans: Vec<AppPlan> = Vec::new();
    for decl in &args.apps {
        let root = base.join(&decl.root);
        let root = root
            .canonicalize()
            .with_context(|| format!("app root {} does not exist", root.display()))?;
        let mut name = decl
            .name
            .clone()
            .unwrap_or_else(|| crate::config::AppSpec::app_name_of(&root));
        // Names label metrics and status: keep them apart.
        let taken = |n: &str| plans.iter().any(|p| p.name == n);
        if taken(&name) {
            let mut i = 2;
            while taken(&format!("{name}-{i}")) {
                i += 1;
            }
            name = format!("{name}-{i}");
        }
        let mut envvars = args.envvars.clone();
        for (k, v) in &decl.envvars {
            envvars.retain(|(name, _)| name != k);
            envvars.push((k.clone(), v.clone()));
        }
        let max_instances = decl
            .max_instances
            .unwrap_or(args.max_pool_size)
            .min(args.max_pool_size);
        let min_instances = decl.min_instances.unwrap_or(0);
        if max_instances == 0 {
            bail!("app {name}: max_instances must be at least 1");
        }
        if min_instances > max_instances {
            bail!(
                "app {name}: min_instances ({min_instances}) exceeds its maximum ({max_instances})"
            );
        }
        plans.push(AppPlan {
            name,
            rackup: rackup_of(&root)?,
            root,
            route: Route::parse(&decl.route).map_err(anyhow::Error::msg)?,
            environment: decl
                .environment
                .clone()
                .unwrap_or_else(|| args.environment.clone()),
            envvars,
            spawn_method: decl.spawn_method.unwrap_or(args.spawn_method),
            min_instances,
            max_instances,
            memory_limit: decl.memory_limit.unwrap_or(args.memory_limit),
            user: decl.user.clone().or_else(|| args.user.clone()),
            warmup: match &decl.warmup_requests {
                Some(requests) => Warmup {
                    requests: requests
                        .iter()
                        .map(|r| WarmupRequest::parse(r).map_err(anyhow::Error::msg))
                        .collect::<Result<_>>()?,
                    rounds: args.preload.warmup_rounds,
                },
                None => args.preload.warmup(),
            },
        });
    }
    let total_min: usize = plans.iter().map(|p| p.min_instances).sum();
    if total_min > args.max_pool_size {
        bail!(
            "the apps' min_instances add up to {total_min}, over --max-pool-size ({})",
            args.max_pool_size
        );
    }
    Ok(plans)
}

fn rackup_of(root: &Path) -> Result<PathBuf> {
    let rackup = root.join("config.ru");
    if !rackup.is_file() {
        bail!(
            "no config.ru in {}: rustrack serves Rack apps",
            root.display()
        );
    }
    Ok(rackup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse() {
        let a = parse("shop.example.com=apps/shop").unwrap();
        assert_eq!(a.route, "shop.example.com");
        assert_eq!(a.root, PathBuf::from("apps/shop"));
        let b = parse(
            r#"{"route": "/blog", "root": "blog", "environment": "production",
                "envvars": {"A": "1"}, "min_instances": 1, "spawn_method": "direct"}"#,
        )
        .unwrap();
        assert_eq!(b.route, "/blog");
        assert_eq!(b.environment.as_deref(), Some("production"));
        assert_eq!(b.envvars["A"], "1");
        assert_eq!(b.spawn_method, Some(SpawnMethod::Direct));
        let c = parse(r#"{"route": "/", "root": ".", "warmup_requests": ["/", "POST /x"]}"#);
        assert_eq!(c.unwrap().warmup_requests.unwrap().len(), 2);
    }

    #[test]
    fn mistakes_are_named() {
        assert!(parse("apps/shop").unwrap_err().contains("ROUTE=APP_ROOT"));
        assert!(parse("a*.b=x").is_err());
        assert!(parse("default=").unwrap_err().contains("empty"));
        let unknown = parse(r#"{"route": "default", "root": ".", "min_instance": 1}"#);
        assert!(unknown.unwrap_err().contains("min_instance"));
        let warmup = parse(r#"{"route": "default", "root": ".", "warmup_requests": ["get /"]}"#);
        assert!(warmup.unwrap_err().contains("upper case"));
    }
}
