//! The registry that builds adapters from configuration: a `kind` string mapped to a factory.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalogue::System;
use crate::dispatch::AdapterSet;
use crate::event::WebhookVerifier;
use crate::traits::{Fulfillment, Notifier, OrderSystem, Payment, Warehouse};

/// The configuration of one adapter, as a business line writes it:
/// `{ kind = "stripe", settings = { api_key_env = "STRIPE_KEY" } }`.
///
/// Settings never hold a secret: they name the environment variable that does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    /// The registered kind (`sim`, `stripe`, `http`).
    pub kind: String,
    /// Kind-specific settings; each factory reads and checks its own.
    #[serde(default = "empty_object")]
    pub settings: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl AdapterConfig {
    /// A configuration with no settings.
    pub fn new(kind: impl Into<String>) -> AdapterConfig {
        AdapterConfig {
            kind: kind.into(),
            settings: empty_object(),
        }
    }

    /// A configuration with settings.
    pub fn with_settings(kind: impl Into<String>, settings: serde_json::Value) -> AdapterConfig {
        AdapterConfig {
            kind: kind.into(),
            settings,
        }
    }
}

/// A secret read from the environment. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself; call it only where the platform needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why an adapter could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No factory is registered for the kind.
    #[error("unknown adapter kind `{kind}`; registered kinds: {}", known.join(", "))]
    UnknownKind {
        /// The kind asked for.
        kind: String,
        /// The registered kinds, sorted.
        known: Vec<String>,
    },
    /// The setting that names an environment variable is absent or not a string.
    #[error("adapter `{kind}`: setting `{setting}` must name an environment variable")]
    MissingSetting {
        /// The adapter kind.
        kind: String,
        /// The setting (`api_key_env`).
        setting: String,
    },
    /// The environment variable a setting names is not set.
    #[error("adapter `{kind}`: environment variable `{var}` (named by `{setting}`) is not set")]
    MissingEnv {
        /// The adapter kind.
        kind: String,
        /// The setting that names it.
        setting: String,
        /// The variable's name (never its value).
        var: String,
    },
    /// The settings are wrong for the kind.
    #[error("adapter `{kind}`: invalid settings: {message}")]
    InvalidSettings {
        /// The adapter kind.
        kind: String,
        /// What is wrong.
        message: String,
    },
    /// The adapter was bound to a system it does not serve.
    #[error("adapter `{kind}` does not serve the {system} system")]
    MissingSystem {
        /// The adapter kind.
        kind: String,
        /// The system it was bound to.
        system: &'static str,
    },
}

/// What a factory gets: the configuration and a way to read secrets from the environment.
pub struct BuildContext<'a> {
    config: &'a AdapterConfig,
    env: &'a dyn Fn(&str) -> Option<String>,
    validating: bool,
}

/// What [`BuildContext::secret`] answers while validating: any setting that names an
/// environment variable reads as this, so validation needs no secrets.
pub const VALIDATION_PLACEHOLDER: &str = "unset-during-validation";

impl BuildContext<'_> {
    /// The adapter's configuration.
    pub fn config(&self) -> &AdapterConfig {
        self.config
    }

    /// Reads the settings into the factory's own (strict) settings type.
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> Result<T, RegistryError> {
        T::deserialize(&self.config.settings).map_err(|e| RegistryError::InvalidSettings {
            kind: self.config.kind.clone(),
            message: e.to_string(),
        })
    }

    /// True when the adapter is built only so `aftersales validate` can read its platform
    /// and capabilities. Secrets then read as [`VALIDATION_PLACEHOLDER`]: a factory that
    /// must parse a secret (a PEM key) checks its other settings, then returns
    /// [`Built::described`] instead of parsing it.
    pub fn validating(&self) -> bool {
        self.validating
    }

    /// Reads the secret held by the environment variable that setting `setting` names
    /// (`secret("api_key_env")` with `api_key_env = "STRIPE_KEY"` reads `$STRIPE_KEY`).
    /// While [validating](BuildContext::validating), the setting must still name a
    /// variable, but its value is [`VALIDATION_PLACEHOLDER`].
    pub fn secret(&self, setting: &str) -> Result<Secret, RegistryError> {
        let kind = self.config.kind.clone();
        let Some(var) = self.config.settings.get(setting).and_then(|v| v.as_str()) else {
            return Err(RegistryError::MissingSetting {
                kind,
                setting: setting.to_owned(),
            });
        };
        if self.validating {
            return Ok(Secret(VALIDATION_PLACEHOLDER.to_owned()));
        }
        match (self.env)(var) {
            Some(value) => Ok(Secret(value)),
            None => Err(RegistryError::MissingEnv {
                kind,
                setting: setting.to_owned(),
                var: var.to_owned(),
            }),
        }
    }
}

/// What a factory built: the systems this adapter serves (a payment platform fills only
/// `payment`, the simulator fills all), and its webhook verifier if it has webhooks.
#[derive(Clone, Default)]
pub struct Built {
    /// The order system, if this adapter is one.
    pub order: Option<Arc<dyn OrderSystem>>,
    /// The warehouse, if this adapter is one.
    pub warehouse: Option<Arc<dyn Warehouse>>,
    /// The fulfillment system, if this adapter is one.
    pub fulfillment: Option<Arc<dyn Fulfillment>>,
    /// The payment system, if this adapter is one.
    pub payment: Option<Arc<dyn Payment>>,
    /// The notifier, if this adapter is one.
    pub notify: Option<Arc<dyn Notifier>>,
    /// The webhook verifier, if the platform sends webhooks.
    pub webhooks: Option<Arc<dyn WebhookVerifier>>,
}

impl fmt::Debug for Built {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Built")
            .field("order", &self.order.is_some())
            .field("warehouse", &self.warehouse.is_some())
            .field("fulfillment", &self.fulfillment.is_some())
            .field("payment", &self.payment.is_some())
            .field("notify", &self.notify.is_some())
            .field("webhooks", &self.webhooks.is_some())
            .finish()
    }
}

/// A factory: builds an adapter from its configuration.
pub type Factory = Arc<dyn Fn(&BuildContext<'_>) -> Result<Built, RegistryError> + Send + Sync>;

/// Which adapter serves each system of a business line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterSetConfig {
    /// The order system.
    pub order: AdapterConfig,
    /// The warehouse.
    pub warehouse: AdapterConfig,
    /// The fulfillment system.
    pub fulfillment: AdapterConfig,
    /// The payment system.
    pub payment: AdapterConfig,
    /// The notifier.
    pub notify: AdapterConfig,
}

/// A business line's adapter set and the webhook verifiers of its systems.
pub type LineAdapters = (AdapterSet, Vec<(System, Arc<dyn WebhookVerifier>)>);

/// Maps adapter kinds to factories. The binary registers one line per platform.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, Factory>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers a factory for `kind`; a later registration of the same kind replaces it.
    pub fn register(
        &mut self,
        kind: impl Into<String>,
        factory: impl Fn(&BuildContext<'_>) -> Result<Built, RegistryError> + Send + Sync + 'static,
    ) -> &mut Registry {
        self.factories.insert(kind.into(), Arc::new(factory));
        self
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }

    /// Builds one adapter. `env` looks up environment variables (`|name|
    /// std::env::var(name).ok()` in the binary, a map in tests).
    pub fn build(
        &self,
        config: &AdapterConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Built, RegistryError> {
        let Some(factory) = self.factories.get(&config.kind) else {
            return Err(RegistryError::UnknownKind {
                kind: config.kind.clone(),
                known: self.kinds(),
            });
        };
        factory(&BuildContext {
            config,
            env,
            validating: false,
        })
    }

    /// Builds one adapter for validation only: no environment is read (secrets are
    /// [`VALIDATION_PLACEHOLDER`]) and the factory may return [`Built::described`]. Use the
    /// result for its platform names and capabilities, never to act.
    pub fn build_for_validation(&self, config: &AdapterConfig) -> Result<Built, RegistryError> {
        let Some(factory) = self.factories.get(&config.kind) else {
            return Err(RegistryError::UnknownKind {
                kind: config.kind.clone(),
                known: self.kinds(),
            });
        };
        factory(&BuildContext {
            config,
            env: &|_| None,
            validating: true,
        })
    }

    /// Builds the adapters of one business line. Systems with identical configurations
    /// share one built adapter (the simulator serves all five from one state).
    pub fn build_set(
        &self,
        config: &AdapterSetConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AdapterSet, RegistryError> {
        self.build_line(config, env).map(|(set, _)| set)
    }

    /// [`Registry::build_set`], also returning the webhook verifier of each system whose
    /// platform sends webhooks, from the same built adapters.
    pub fn build_line(
        &self,
        config: &AdapterSetConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<LineAdapters, RegistryError> {
        let configs = [
            &config.order,
            &config.warehouse,
            &config.fulfillment,
            &config.payment,
            &config.notify,
        ];
        let mut built: Vec<Built> = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let same = configs[..i].iter().position(|earlier| earlier == c);
            let b = match same.and_then(|j| built.get(j)) {
                Some(b) => b.clone(),
                None => self.build(c, env)?,
            };
            built.push(b);
        }
        let missing = |c: &AdapterConfig, system: System| RegistryError::MissingSystem {
            kind: c.kind.clone(),
            system: system.as_str(),
        };
        let pick = |i: usize| built.get(i).cloned().unwrap_or_default();
        let systems = [
            System::Order,
            System::Warehouse,
            System::Fulfillment,
            System::Payment,
            System::Notify,
        ];
        let webhooks = systems
            .into_iter()
            .zip(&built)
            .filter_map(|(system, b)| b.webhooks.clone().map(|w| (system, w)))
            .collect();
        let set = AdapterSet {
            order: pick(0)
                .order
                .ok_or_else(|| missing(&config.order, System::Order))?,
            warehouse: pick(1)
                .warehouse
                .ok_or_else(|| missing(&config.warehouse, System::Warehouse))?,
            fulfillment: pick(2)
                .fulfillment
                .ok_or_else(|| missing(&config.fulfillment, System::Fulfillment))?,
            payment: pick(3)
                .payment
                .ok_or_else(|| missing(&config.payment, System::Payment))?,
            notify: pick(4)
                .notify
                .ok_or_else(|| missing(&config.notify, System::Notify))?,
        };
        Ok((set, webhooks))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn unknown_kind_lists_registered_kinds_sorted() {
        let mut r = Registry::new();
        r.register("stripe", |_| Ok(Built::default()))
            .register("alipay", |_| Ok(Built::default()))
            .register("sim", |_| Ok(Built::default()));
        let err = r.build(&AdapterConfig::new("strpe"), &no_env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown adapter kind `strpe`; registered kinds: alipay, sim, stripe"
        );
    }

    #[test]
    fn secrets_come_from_the_named_env_var_and_never_print() {
        let mut r = Registry::new();
        r.register("stripe", |cx| {
            let key = cx.secret("api_key_env")?;
            assert_eq!(key.expose(), "sk_test_123");
            assert_eq!(format!("{key:?} {key}"), "*** ***");
            Ok(Built::default())
        });
        let config = AdapterConfig::with_settings(
            "stripe",
            serde_json::json!({"api_key_env": "STRIPE_KEY"}),
        );
        let env: HashMap<&str, &str> = [("STRIPE_KEY", "sk_test_123")].into();
        let lookup = |name: &str| env.get(name).map(|v| (*v).to_owned());
        assert!(r.build(&config, &lookup).is_ok());

        let err = r.build(&config, &no_env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "adapter `stripe`: environment variable `STRIPE_KEY` (named by `api_key_env`) is not set"
        );
        let err = r.build(&AdapterConfig::new("stripe"), &lookup).unwrap_err();
        assert_eq!(
            err.to_string(),
            "adapter `stripe`: setting `api_key_env` must name an environment variable"
        );
    }

    #[test]
    fn settings_are_read_strictly() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            seed: u64,
        }
        let config = AdapterConfig::with_settings("x", serde_json::json!({"sed": 1}));
        let cx = BuildContext {
            config: &config,
            env: &no_env,
            validating: false,
        };
        let err = cx.settings::<S>().unwrap_err();
        assert!(matches!(err, RegistryError::InvalidSettings { .. }));
        assert!(
            err.to_string()
                .starts_with("adapter `x`: invalid settings: unknown field `sed`"),
            "{err}"
        );
    }

    #[test]
    fn validation_builds_read_no_environment_but_still_need_the_setting() {
        let mut r = Registry::new();
        r.register("keyed", |cx| {
            let key = cx.secret("key_env")?;
            assert!(cx.validating());
            assert_eq!(key.expose(), VALIDATION_PLACEHOLDER);
            Ok(Built::described(
                "keyed",
                System::Payment,
                crate::Capabilities::required(System::Payment),
            ))
        });
        let named = AdapterConfig::with_settings("keyed", serde_json::json!({"key_env": "K"}));
        let built = r.build_for_validation(&named).unwrap();
        assert_eq!(built.payment.map(|p| p.platform()), Some("keyed"));
        let unnamed = AdapterConfig::new("keyed");
        assert!(matches!(
            r.build_for_validation(&unnamed),
            Err(RegistryError::MissingSetting { .. })
        ));
        assert!(matches!(
            r.build_for_validation(&AdapterConfig::new("nope")),
            Err(RegistryError::UnknownKind { .. })
        ));
    }

    #[test]
    fn build_set_reports_a_system_the_adapter_does_not_serve() {
        static BUILDS: AtomicUsize = AtomicUsize::new(0);
        let mut r = Registry::new();
        r.register("paymentonly", |_| {
            BUILDS.fetch_add(1, Ordering::SeqCst);
            Ok(Built::default())
        });
        let c = AdapterConfig::new("paymentonly");
        let set = AdapterSetConfig {
            order: c.clone(),
            warehouse: c.clone(),
            fulfillment: c.clone(),
            payment: c.clone(),
            notify: c,
        };
        let err = r.build_set(&set, &no_env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "adapter `paymentonly` does not serve the order system"
        );
        // Five identical configurations build one adapter.
        assert_eq!(BUILDS.load(Ordering::SeqCst), 1);
    }
}
