//! `CHECKPOINT_*`: the key that signs the log's checkpoints and how often it signs (issue 16).

use std::sync::Arc;
use std::time::Duration;

use cryptovault_events::checkpoint::{SignerKey, VerifierKey};

use super::{parse, ConfigError, Environment, Lookup};

/// How the notary signs checkpoints of the log's Merkle tree.
#[derive(Clone)]
pub struct CheckpointSettings {
    /// `CHECKPOINT_SIGNING_KEY`: a C2SP note signer key (`PRIVATE+KEY+<name>+<id>+<key>`, made
    /// by `cryptovault audit generate-key --name ORIGIN`). Its name is the checkpoints' origin
    /// line. Required in production; unset elsewhere, no tree is built and nothing is signed
    /// (the proof routes answer 503 `checkpoints_disabled`).
    pub signer: Option<Arc<SignerKey>>,
    /// `CHECKPOINT_RETIRED_KEYS`: comma-separated verifier keys (`<name>+<id>+<key>`) of keys
    /// that signed earlier checkpoints (key rotation): published beside the current one and
    /// accepted for the checkpoints already stored.
    pub retired: Vec<VerifierKey>,
    /// `CHECKPOINT_EVERY_EVENTS` (default 1000): sign once the tree grew by this many leaves (at
    /// most once a second: `notary::rules::COUNT_SIGNING_SPACING`).
    pub every_events: u64,
    /// `CHECKPOINT_EVERY_SECS` (default 10): sign once the last checkpoint is this old and the
    /// tree grew at all.
    pub every: Duration,
}

impl std::fmt::Debug for CheckpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSettings")
            .field(
                "signer",
                &self.signer.as_ref().map(|s| s.verifier().to_string()),
            )
            .field("retired", &self.retired.len())
            .field("every_events", &self.every_events)
            .field("every", &self.every)
            .finish()
    }
}

impl CheckpointSettings {
    pub fn from_lookup(
        lookup: &impl Lookup,
        environment: Environment,
    ) -> Result<Self, ConfigError> {
        let signer = match lookup("CHECKPOINT_SIGNING_KEY") {
            None if environment == Environment::Production => {
                return Err(ConfigError::Missing("CHECKPOINT_SIGNING_KEY"))
            }
            None => None,
            Some(text) => Some(Arc::new(SignerKey::parse(text.trim()).map_err(|e| {
                ConfigError::Invalid {
                    var: "CHECKPOINT_SIGNING_KEY",
                    // Never echo the value: it is the private key.
                    reason: format!(
                        "not a note signer key (PRIVATE+KEY+<name>+<id>+<key>; make one with \
                         `cryptovault audit generate-key`): {e}"
                    ),
                }
            })?)),
        };
        let retired = match lookup("CHECKPOINT_RETIRED_KEYS") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|key| {
                    VerifierKey::parse(key).map_err(|e| ConfigError::Invalid {
                        var: "CHECKPOINT_RETIRED_KEYS",
                        reason: format!("{key:?} is not a verifier key: {e}"),
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let every_events = parse(lookup, "CHECKPOINT_EVERY_EVENTS", 1000u64)?;
        let every_secs = parse(lookup, "CHECKPOINT_EVERY_SECS", 10u64)?;
        if every_events == 0 || every_events > 10_000_000 {
            return Err(ConfigError::Invalid {
                var: "CHECKPOINT_EVERY_EVENTS",
                reason: "must be from 1 to 10000000".into(),
            });
        }
        if every_secs == 0 || every_secs > 86_400 {
            return Err(ConfigError::Invalid {
                var: "CHECKPOINT_EVERY_SECS",
                reason: "must be from 1 to 86400 (a day)".into(),
            });
        }
        Ok(Self {
            signer,
            retired,
            every_events,
            every: Duration::from_secs(every_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(
        pairs: &[(&str, &str)],
        environment: Environment,
    ) -> Result<CheckpointSettings, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        CheckpointSettings::from_lookup(
            &move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            },
            environment,
        )
    }

    fn key() -> String {
        SignerKey::from_seed("example.com/ledger", [7; 32])
            .unwrap()
            .to_private_string()
    }

    #[test]
    fn production_refuses_to_start_without_a_signing_key() {
        assert_eq!(
            settings(&[], Environment::Production).unwrap_err(),
            ConfigError::Missing("CHECKPOINT_SIGNING_KEY")
        );
        assert!(settings(&[], Environment::Development)
            .unwrap()
            .signer
            .is_none());
        let key = key();
        let on = settings(&[("CHECKPOINT_SIGNING_KEY", &key)], Environment::Production).unwrap();
        assert_eq!(on.signer.unwrap().name(), "example.com/ledger");
    }

    #[test]
    fn a_bad_key_or_interval_names_its_variable_and_never_echoes_the_key() {
        let bad = "PRIVATE+KEY+x+00000000+secretsecret";
        let error = settings(&[("CHECKPOINT_SIGNING_KEY", bad)], Environment::Test).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("CHECKPOINT_SIGNING_KEY"), "{text}");
        assert!(!text.contains("secretsecret"), "{text}");
        for (var, value) in [
            ("CHECKPOINT_EVERY_EVENTS", "0"),
            ("CHECKPOINT_EVERY_SECS", "0"),
            ("CHECKPOINT_EVERY_SECS", "x"),
            ("CHECKPOINT_RETIRED_KEYS", "nope"),
        ] {
            let text = settings(&[(var, value)], Environment::Test)
                .unwrap_err()
                .to_string();
            assert!(text.contains(var), "{var}: {text}");
        }
        let retired = SignerKey::from_seed("old/ledger", [9; 32])
            .unwrap()
            .verifier()
            .to_string();
        let parsed = settings(
            &[("CHECKPOINT_RETIRED_KEYS", &format!("{retired}, "))],
            Environment::Test,
        )
        .unwrap();
        assert_eq!(parsed.retired.len(), 1);
    }
}
