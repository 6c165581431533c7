//! Simulator configuration: seed, latency, fault rates, refund mode, event delivery.

use std::collections::BTreeMap;
use std::time::Duration;

use aftersales_adapter::{RegistryError, Secret};
use serde::Deserialize;

/// A probability in parts per thousand (0 = never, 1000 = always); integers keep runs exact
/// and reproducible.
pub type Permille = u16;

/// How the simulator behaves. Build one with [`SimConfig::quiet`] (no latency, no faults)
/// and change the fields a test cares about.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seeds every random draw: the same seed and the same calls give the same run.
    pub seed: u64,
    /// Latency per action (`payment.refund`); actions not listed use `default_latency`.
    pub latency: BTreeMap<String, Duration>,
    /// Latency of actions not listed in `latency`.
    pub default_latency: Duration,
    /// Random faults per action; actions not listed use `default_faults`.
    pub faults: BTreeMap<String, FaultRates>,
    /// Random faults of actions not listed in `faults`.
    pub default_faults: FaultRates,
    /// Business outcomes drawn at random (interception too late, wrong item, ...).
    pub business: BusinessFaults,
    /// Whether refunds complete at once or stay pending for a while.
    pub refunds: RefundMode,
    /// How drained events are delivered (duplicates, reordering).
    pub delivery: Delivery,
    /// How long a hanging call sleeps before it answers "unknown outcome"; longer than any
    /// caller's timeout.
    pub hang: Duration,
    /// The secret the simulator signs its webhooks with.
    pub webhook_secret: Secret,
    /// How far a webhook's signed time may be from "now".
    pub webhook_tolerance: Duration,
}

impl SimConfig {
    /// No latency, no faults, immediate refunds, exact delivery.
    pub fn quiet(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            latency: BTreeMap::new(),
            default_latency: Duration::ZERO,
            faults: BTreeMap::new(),
            default_faults: FaultRates::NONE,
            business: BusinessFaults::NONE,
            refunds: RefundMode::Immediate,
            delivery: Delivery::EXACT,
            hang: Duration::from_secs(3600),
            webhook_secret: Secret::new("whsec_sim"),
            webhook_tolerance: Duration::from_secs(300),
        }
    }

    /// Reads the settings of a `kind = "sim"` adapter (the keys documented on
    /// [`register`](crate::register)), as `aftersales sim serve --settings` does; `env`
    /// looks up the environment variables the settings name.
    pub fn from_settings(
        settings: &serde_json::Value,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SimConfig, RegistryError> {
        let parsed =
            SimSettings::deserialize(settings).map_err(|e| RegistryError::InvalidSettings {
                kind: "sim".into(),
                message: e.to_string(),
            })?;
        parsed.into_config(&|setting: &str| {
            let Some(var) = settings.get(setting).and_then(|v| v.as_str()) else {
                return Err(RegistryError::MissingSetting {
                    kind: "sim".into(),
                    setting: setting.to_owned(),
                });
            };
            env(var)
                .map(Secret::new)
                .ok_or_else(|| RegistryError::MissingEnv {
                    kind: "sim".into(),
                    setting: setting.to_owned(),
                    var: var.to_owned(),
                })
        })
    }

    pub(crate) fn latency_of(&self, action: &str) -> Duration {
        self.latency
            .get(action)
            .copied()
            .unwrap_or(self.default_latency)
    }

    pub(crate) fn faults_of(&self, action: &str) -> FaultRates {
        self.faults
            .get(action)
            .copied()
            .unwrap_or(self.default_faults)
    }
}

/// Per-call fault probabilities, in permille, drawn in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRates {
    /// The call fails before it reaches the platform (network, 5xx, 429).
    #[serde(default)]
    pub transient: Permille,
    /// The platform refuses the call.
    #[serde(default)]
    pub permanent: Permille,
    /// The call takes effect but the answer is lost (unknown outcome).
    #[serde(default)]
    pub lost_answer: Permille,
    /// The request is lost before it takes effect, and the caller cannot tell (unknown
    /// outcome).
    #[serde(default)]
    pub lost_request: Permille,
    /// The call takes effect, then the answer never comes before the caller's timeout.
    #[serde(default)]
    pub hang: Permille,
}

impl FaultRates {
    /// Never fails.
    pub const NONE: FaultRates = FaultRates {
        transient: 0,
        permanent: 0,
        lost_answer: 0,
        lost_request: 0,
        hang: 0,
    };
}

/// Business outcomes the simulator draws at random, in permille.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessFaults {
    /// A warehouse interception answers `too_late` although the goods had not left.
    #[serde(default)]
    pub intercept_too_late: Permille,
    /// A carrier interception fails although the parcel is in transit.
    #[serde(default)]
    pub carrier_intercept_fails: Permille,
    /// A received return fails inspection (wrong or damaged item) when the test does not
    /// say how it went.
    #[serde(default)]
    pub wrong_item: Permille,
    /// A stock reservation answers out of stock although stock exists.
    #[serde(default)]
    pub out_of_stock: Permille,
    /// A pending refund ends `failed` instead of `succeeded` when it settles.
    #[serde(default)]
    pub pending_refund_fails: Permille,
}

impl BusinessFaults {
    /// Everything goes as the state says.
    pub const NONE: BusinessFaults = BusinessFaults {
        intercept_too_late: 0,
        carrier_intercept_fails: 0,
        wrong_item: 0,
        out_of_stock: 0,
        pending_refund_fails: 0,
    };
}

/// Whether a refund answers `succeeded` at once or `pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundMode {
    /// `succeeded` at once (a balance refund).
    Immediate,
    /// `pending`; it settles once `settle_after` has passed on the clock, when the test
    /// calls [`Sim::settle_due`](crate::Sim::settle_due) or anyone asks `refund_status`.
    Pending {
        /// How long after acceptance the refund settles.
        settle_after: Duration,
    },
}

/// How [`Sim::drain_events`](crate::Sim::drain_events) delivers the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Chance that an event is delivered twice.
    pub duplicate: Permille,
    /// Shuffle each drained batch.
    pub reorder: bool,
}

impl Delivery {
    /// Each event once, in order.
    pub const EXACT: Delivery = Delivery {
        duplicate: 0,
        reorder: false,
    };
}

/// One fault a test queues for the next calls of an action with
/// [`Sim::script`](crate::Sim::script); scripted faults come before random ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails transiently without effect.
    Transient,
    /// Is refused for good without effect.
    Permanent,
    /// Takes effect; the answer is lost (unknown outcome).
    LostAnswer,
    /// Is lost before taking effect; the caller sees an unknown outcome.
    LostRequest,
    /// Takes effect, then hangs past any timeout.
    Hang,
    /// Behaves normally (useful between faults in a script).
    None,
}

/// The settings of a `kind = "sim"` adapter in a business line's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SimSettings {
    #[serde(default)]
    seed: u64,
    /// `"immediate"` or `"pending"`.
    #[serde(default = "immediate")]
    refunds: String,
    /// How long pending refunds take, as `"30s"`, `"5m"`, ...
    #[serde(default = "settle_default")]
    settle_after: String,
    /// Latency of every call, as `"20ms"`.
    #[serde(default = "zero")]
    latency: String,
    /// Random faults of every action.
    #[serde(default = "no_faults")]
    faults: FaultRates,
    /// Random faults per action.
    #[serde(default)]
    action_faults: BTreeMap<String, FaultRates>,
    /// Business outcomes at random.
    #[serde(default = "no_business")]
    business: BusinessFaults,
    /// The env var holding the webhook secret; a fixed test secret when absent.
    #[serde(default)]
    webhook_secret_env: Option<String>,
}

fn immediate() -> String {
    "immediate".into()
}
fn settle_default() -> String {
    "30s".into()
}
fn zero() -> String {
    "0s".into()
}
fn no_faults() -> FaultRates {
    FaultRates::NONE
}
fn no_business() -> BusinessFaults {
    BusinessFaults::NONE
}

impl SimSettings {
    /// The configuration these settings describe; `secret` reads the secret a setting
    /// names (`webhook_secret_env`).
    pub(crate) fn into_config(
        self,
        secret: &dyn Fn(&str) -> Result<Secret, RegistryError>,
    ) -> Result<SimConfig, RegistryError> {
        let invalid = |message: String| RegistryError::InvalidSettings {
            kind: "sim".into(),
            message,
        };
        let mut config = SimConfig::quiet(self.seed);
        config.refunds = match self.refunds.as_str() {
            "immediate" => RefundMode::Immediate,
            "pending" => RefundMode::Pending {
                settle_after: parse_duration(&self.settle_after)
                    .map_err(|e| invalid(format!("settle_after: {e}")))?,
            },
            other => {
                return Err(invalid(format!(
                    "refunds: expected \"immediate\" or \"pending\", found \"{other}\""
                )));
            }
        };
        config.default_latency =
            parse_duration(&self.latency).map_err(|e| invalid(format!("latency: {e}")))?;
        config.default_faults = self.faults;
        for action in self.action_faults.keys() {
            if aftersales_adapter::catalogue::find_full(action).is_none() {
                return Err(invalid(format!("action_faults: unknown action `{action}`")));
            }
        }
        config.faults = self.action_faults;
        config.business = self.business;
        if self.webhook_secret_env.is_some() {
            config.webhook_secret = secret("webhook_secret_env")?;
        }
        Ok(config)
    }
}

/// Reads `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"7d"`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("expected a duration such as \"30s\", found \"{text}\""))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => {
            return Err(format!("expected a unit ms, s, m, h or d in \"{text}\""));
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("duration \"{text}\" is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(
            parse_duration("5"),
            Err("expected a unit ms, s, m, h or d in \"5\"".into())
        );
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn from_settings_reads_the_registry_keys_and_the_named_env_var() {
        let settings = serde_json::json!({
            "seed": 9, "refunds": "pending", "settle_after": "5m",
            "action_faults": {"payment.refund": {"transient": 100}},
            "webhook_secret_env": "SIM_SECRET",
        });
        let env = |name: &str| (name == "SIM_SECRET").then(|| "whsec_test".to_owned());
        let config = SimConfig::from_settings(&settings, &env).unwrap();
        assert_eq!(config.seed, 9);
        assert_eq!(
            config.refunds,
            RefundMode::Pending {
                settle_after: Duration::from_secs(300)
            }
        );
        assert_eq!(config.faults_of("payment.refund").transient, 100);
        assert_eq!(config.webhook_secret.expose(), "whsec_test");
        let missing = SimConfig::from_settings(&settings, &|_| None).unwrap_err();
        assert!(
            matches!(missing, RegistryError::MissingEnv { .. }),
            "{missing}"
        );
        let unknown = SimConfig::from_settings(&serde_json::json!({"sede": 1}), &env).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `sede`"),
            "{unknown}"
        );
    }
}
