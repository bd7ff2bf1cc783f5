//! Finding a PKCS#11 module when none is named: SoftHSM2 on the usual paths, then the modules
//! registered with p11-kit (`*.module` files), then p11-kit's proxy, which serves them all.

use std::path::{Path, PathBuf};

use super::error::TokenError;

/// Where Debian and other distributions put SoftHSM2, tried in order when no module is named.
pub const DEFAULT_MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib/pkcs11/libsofthsm2.so",
];

/// Where p11-kit reads module registrations (system configuration first, then the packages').
/// Per-user registrations are left out: p11-kit ignores them for root, and keyward should find
/// the same module whoever runs it.
pub const P11KIT_MODULE_DIRS: &[&str] = &["/etc/pkcs11/modules", "/usr/share/p11-kit/modules"];

/// Where p11-kit resolves a registration's relative `module:` file name.
pub const P11KIT_MODULE_PATHS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    "/usr/lib64/pkcs11",
    "/usr/lib/pkcs11",
];

/// Where p11-kit's proxy module is installed.
pub const P11KIT_PROXY_PATHS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib/aarch64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib64/p11-kit-proxy.so",
    "/usr/lib/p11-kit-proxy.so",
];

/// The places module discovery looks at. [`SearchPlaces::system`] is what keyward uses; tests
/// point it at temporary directories.
#[derive(Debug, Clone)]
pub struct SearchPlaces {
    /// SoftHSM2 library paths, in order.
    pub softhsm: Vec<PathBuf>,
    /// Directories of p11-kit `*.module` registrations.
    pub registrations: Vec<PathBuf>,
    /// Directories for relative `module:` names.
    pub module_paths: Vec<PathBuf>,
    /// p11-kit proxy library paths.
    pub proxy: Vec<PathBuf>,
}

/// A module found by discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundModule {
    /// The library.
    pub path: PathBuf,
    /// `C_Initialize` arguments from its p11-kit registration (`x-init-reserved:`), if any.
    pub init_args: Option<String>,
    /// How it was found, for `-v` output ("SoftHSM2 default path", "p11-kit registration …").
    pub how: String,
}

/// One p11-kit registration that names a key store keyward could load.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Registration {
    file: PathBuf,
    module: PathBuf,
    init_args: Option<String>,
}

impl SearchPlaces {
    /// The system's places.
    pub fn system() -> SearchPlaces {
        let paths = |list: &[&str]| list.iter().map(PathBuf::from).collect();
        SearchPlaces {
            softhsm: paths(DEFAULT_MODULE_PATHS),
            registrations: paths(P11KIT_MODULE_DIRS),
            module_paths: paths(P11KIT_MODULE_PATHS),
            proxy: paths(P11KIT_PROXY_PATHS),
        }
    }

    /// SoftHSM2 first (as before p11-kit was looked at); else the one module registered with
    /// p11-kit; else, when several are, p11-kit's proxy, which offers the tokens of all of them.
    pub fn find(&self) -> Result<FoundModule, TokenError> {
        if let Some(path) = self.softhsm.iter().find(|p| p.exists()) {
            return Ok(FoundModule {
                path: path.clone(),
                init_args: None,
                how: "SoftHSM2 default path".to_string(),
            });
        }
        let registered = self.registrations();
        let proxy = self.proxy.iter().find(|p| p.exists());
        match (registered.as_slice(), proxy) {
            ([one], _) => Ok(FoundModule {
                path: one.module.clone(),
                init_args: one.init_args.clone(),
                how: format!("p11-kit registration {}", one.file.display()),
            }),
            ([], _) => Err(TokenError::ModuleNotFound {
                tried: self.everything(),
            }),
            (_, Some(proxy)) => Ok(FoundModule {
                path: proxy.clone(),
                init_args: None,
                how: format!("p11-kit proxy for {} registered modules", registered.len()),
            }),
            (several, None) => Err(TokenError::ModuleChoice {
                registered: several.iter().map(|r| r.module.clone()).collect(),
            }),
        }
    }

    /// Every place looked at, for the "no module" message.
    fn everything(&self) -> Vec<PathBuf> {
        let mut all = self.softhsm.clone();
        all.extend(self.registrations.iter().map(|d| d.join("*.module")));
        all.extend(self.proxy.iter().cloned());
        all
    }

    /// The usable registrations, in file-name order within each directory; a module registered
    /// twice (as `/etc` overriding `/usr/share`) counts once, the first registration winning.
    fn registrations(&self) -> Vec<Registration> {
        let mut out: Vec<Registration> = Vec::new();
        let mut seen_names: Vec<std::ffi::OsString> = Vec::new();
        for dir in &self.registrations {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "module"))
                .collect();
            files.sort();
            for file in files {
                let name = file.file_name().map(|n| n.to_os_string());
                if name.as_ref().is_some_and(|n| seen_names.contains(n)) {
                    continue;
                }
                seen_names.extend(name);
                let Ok(text) = std::fs::read_to_string(&file) else {
                    log::debug!("cannot read p11-kit registration {}", file.display());
                    continue;
                };
                if let Some(r) = self.usable(&file, &text) {
                    if !out.iter().any(|o| o.module == r.module) {
                        out.push(r);
                    }
                }
            }
        }
        out
    }

    /// A registration keyward may load: it names a module file that exists, is not a trust
    /// store (`trust-policy: yes`, certificates only), and is not disabled for keyward.
    fn usable(&self, file: &Path, text: &str) -> Option<Registration> {
        let fields = parse_registration(text);
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let listed = |key: &str| {
            get(key).map(|v| {
                v.split(',')
                    .map(str::trim)
                    .any(|name| name == env!("CARGO_PKG_NAME"))
            })
        };
        let trust_only = get("trust-policy").is_some_and(|v| v == "yes" || v == "true");
        let disabled = listed("disable-in") == Some(true) || listed("enable-in") == Some(false);
        if trust_only || disabled {
            log::debug!("p11-kit registration {} skipped", file.display());
            return None;
        }
        let module = get("module")?;
        let module = Path::new(module);
        let path = if module.is_absolute() {
            module.to_path_buf()
        } else {
            self.module_paths
                .iter()
                .map(|d| d.join(module))
                .find(|p| p.exists())?
        };
        if !path.exists() {
            return None;
        }
        Some(Registration {
            file: file.to_path_buf(),
            module: path,
            init_args: get("x-init-reserved")
                .map(str::to_string)
                .filter(|v| !v.is_empty()),
        })
    }
}

/// The `key: value` lines of a p11-kit registration (`#` comments and blank lines skipped).
fn parse_registration(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Places {
        _dir: tempfile::TempDir,
        places: SearchPlaces,
        root: PathBuf,
    }

    fn places() -> Places {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for d in ["etc", "share", "lib"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let places = SearchPlaces {
            softhsm: vec![root.join("softhsm/libsofthsm2.so")],
            registrations: vec![root.join("etc"), root.join("share")],
            module_paths: vec![root.join("lib")],
            proxy: vec![root.join("p11-kit-proxy.so")],
        };
        Places {
            _dir: dir,
            places,
            root,
        }
    }

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    #[test]
    fn nothing_found_names_every_place_looked_at() {
        let p = places();
        let err = p.places.find().unwrap_err().to_string();
        for place in [
            "softhsm/libsofthsm2.so",
            "etc/*.module",
            "share/*.module",
            "p11-kit-proxy.so",
        ] {
            assert!(err.contains(place), "{place} missing: {err}");
        }
        assert!(err.contains("--module"), "{err}");
    }

    #[test]
    fn softhsm_comes_first() {
        let p = places();
        touch(&p.root.join("softhsm/libsofthsm2.so"));
        touch(&p.root.join("lib/libother.so"));
        std::fs::write(p.root.join("share/other.module"), "module: libother.so\n").unwrap();
        assert_eq!(
            p.places.find().unwrap().path,
            p.root.join("softhsm/libsofthsm2.so")
        );
    }

    #[test]
    fn one_registered_module_is_loaded_with_its_init_args() {
        let p = places();
        touch(&p.root.join("lib/libnss.so"));
        std::fs::write(
            p.root.join("share/nss.module"),
            "# NSS\nmodule: libnss.so\nx-init-reserved: configdir='sql:/x' flags=\n",
        )
        .unwrap();
        // A trust store and a module disabled for keyward do not count.
        touch(&p.root.join("lib/trust.so"));
        std::fs::write(
            p.root.join("share/trust.module"),
            "module: trust.so\ntrust-policy: yes\n",
        )
        .unwrap();
        std::fs::write(
            p.root.join("share/off.module"),
            "module: trust.so\ndisable-in: p11-kit-proxy, keyward\n",
        )
        .unwrap();
        // A registration whose library is missing does not count either.
        std::fs::write(p.root.join("share/gone.module"), "module: libgone.so\n").unwrap();
        let found = p.places.find().unwrap();
        assert_eq!(found.path, p.root.join("lib/libnss.so"));
        assert_eq!(
            found.init_args.as_deref(),
            Some("configdir='sql:/x' flags=")
        );
    }

    #[test]
    fn several_registered_modules_go_through_the_proxy() {
        let p = places();
        touch(&p.root.join("lib/a.so"));
        touch(&p.root.join("lib/b.so"));
        std::fs::write(p.root.join("share/a.module"), "module: a.so\n").unwrap();
        std::fs::write(p.root.join("etc/b.module"), "module: b.so\n").unwrap();
        let err = p.places.find().unwrap_err().to_string();
        assert!(err.contains("a.so") && err.contains("b.so"), "{err}");
        touch(&p.root.join("p11-kit-proxy.so"));
        assert_eq!(
            p.places.find().unwrap().path,
            p.root.join("p11-kit-proxy.so")
        );
    }

    #[test]
    fn etc_overrides_a_registration_of_the_same_name() {
        let p = places();
        touch(&p.root.join("lib/a.so"));
        std::fs::write(p.root.join("share/a.module"), "module: a.so\n").unwrap();
        std::fs::write(
            p.root.join("etc/a.module"),
            "module: a.so\nenable-in: firefox\n",
        )
        .unwrap();
        assert!(p.places.find().is_err());
    }
}
