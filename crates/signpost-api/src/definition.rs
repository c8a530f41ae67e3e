//! Service definitions under `/api/v1/services/{service}/definition`: what a service is,
//! stored beside its instances.
//!
//! The agent stores and answers the core's own types, so they are the wire types: re-exported
//! here, written once.

/// A parameter of an endpoint.
pub use signpost_core::model::Parameter;

/// An endpoint a service exposes.
pub use signpost_core::model::Endpoint;

/// A stored service definition, as `GET .../definition` (and a successful `PUT`) answers it.
pub use signpost_core::model::ServiceDefinition;

/// The body of `PUT /api/v1/services/{service}/definition`: the agent reads it as
/// [`signpost_core::validate::DefinitionInput`] (refusing unknown fields), so a client sends
/// that very type.
pub use signpost_core::validate::DefinitionInput as DefinitionSpec;
