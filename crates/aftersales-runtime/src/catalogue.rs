//! Bridges the adapter crate's published action list into the engine's catalogue type.
//!
//! The core crate knows no adapters and the adapter crate knows no engine; the binary,
//! which sits above both, converts one into the other.

use aftersales_adapter::catalogue::{self as adapter, FieldType};
use aftersales_core::catalogue::{ActionSig, Catalogue, FieldSig};
use aftersales_core::model::ValueType;

fn value_type(t: FieldType) -> ValueType {
    match t {
        FieldType::String => ValueType::String,
        FieldType::Int => ValueType::Int,
        FieldType::Bool => ValueType::Bool,
        FieldType::Money => ValueType::Money,
        FieldType::Timestamp => ValueType::Timestamp,
        FieldType::List => ValueType::List(None),
        FieldType::Object => ValueType::Object,
        _ => ValueType::Any,
    }
}

fn fields(specs: &[adapter::FieldSpec]) -> Vec<FieldSig> {
    specs
        .iter()
        .map(|f| FieldSig {
            name: f.name.to_owned(),
            ty: value_type(f.ty),
            required: f.required,
        })
        .collect()
}

/// The catalogue of every action the adapter contract defines.
pub fn builtin() -> Catalogue {
    let mut c = Catalogue::new();
    for a in adapter::catalogue() {
        c.insert(ActionSig {
            name: a.full_name(),
            mutating: a.mutating,
            inputs: fields(a.inputs),
            outputs: fields(a.outputs),
        });
    }
    c
}
