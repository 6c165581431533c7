//! The actions a workflow may call, as the validator sees them.
//!
//! The engine does not know which systems exist: the binary fills a [`Catalogue`] from the
//! adapter crate's published action list and hands it to [`crate::validate::validate`].

use std::collections::BTreeMap;

use crate::model::ValueType;

/// One declared field of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSig {
    /// The field name.
    pub name: String,
    /// Its type.
    pub ty: ValueType,
    /// Inputs: must be given. Outputs: always present.
    pub required: bool,
}

/// One action: `system.action` with its inputs and outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSig {
    /// The full name, `payment.refund`.
    pub name: String,
    /// Whether it changes state at the platform (and so can be compensated).
    pub mutating: bool,
    /// Declared inputs.
    pub inputs: Vec<FieldSig>,
    /// Declared outputs.
    pub outputs: Vec<FieldSig>,
}

/// The set of callable actions.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    actions: BTreeMap<String, ActionSig>,
}

impl Catalogue {
    /// An empty catalogue.
    pub fn new() -> Catalogue {
        Catalogue::default()
    }

    /// Adds (or replaces) an action.
    pub fn insert(&mut self, action: ActionSig) {
        self.actions.insert(action.name.clone(), action);
    }

    /// Looks an action up by its full name.
    pub fn get(&self, name: &str) -> Option<&ActionSig> {
        self.actions.get(name)
    }

    /// Every action name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(String::as_str)
    }

    /// The distinct system names (`order`, `payment`, ...), sorted.
    pub fn systems(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .actions
            .keys()
            .filter_map(|k| k.split_once('.').map(|(s, _)| s))
            .collect();
        out.dedup();
        out
    }
}
