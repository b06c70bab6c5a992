//! Why a registry lookup has nothing to return: typed, so a caller tells "no such
//! function" from "the store failed" by the variant, not by an error kind, and the edges
//! map it to a status once.

use crate::store::StoreError;
use common::model::{ApiError, ArtifactDigest, ErrorKind, Fault, FunctionName, Qualifier};
use std::num::NonZeroU32;

/// A function, alias or version that could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The tenant has no function of this name (404).
    #[error("function {0} not found")]
    Function(FunctionName),
    /// The function has no alias the qualifier names (404).
    #[error("alias {alias} of {name} not found")]
    Alias {
        /// The qualifier naming the alias.
        alias: Qualifier,
        /// The function.
        name: FunctionName,
    },
    /// The function has no such published version (404).
    #[error("version {version} of {name} not found")]
    Version {
        /// The version number.
        version: NonZeroU32,
        /// The function.
        name: FunctionName,
    },
    /// No module with this digest is stored (404).
    #[error("module {0} not found")]
    Module(ArtifactDigest),
    /// The store failed.
    #[error("the registry's store failed")]
    Store(#[from] StoreError),
    /// A stored record does not decode.
    #[error("a registry record is corrupt")]
    Record(#[source] ApiError),
}

impl LookupError {
    /// Whose fault it is: the caller's for a name that does not exist, the region's for a
    /// failing store or a corrupt record.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Function(_) | Self::Alias { .. } | Self::Version { .. } | Self::Module(_) => {
                Fault::Device
            }
            Self::Store(_) | Self::Record(_) => Fault::Internal,
        }
    }

    /// Whether nothing of that name exists (as opposed to the store failing).
    pub fn is_missing(&self) -> bool {
        self.fault() == Fault::Device
    }
}

/// The edges' rendering: 404 naming what is missing (the messages the API always gave),
/// else the store's error.
impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        let fault = e.fault();
        match e {
            LookupError::Store(e) => ApiError::from(e),
            LookupError::Record(e) => e,
            missing => ApiError::new(ErrorKind::NotFound, missing.to_string()),
        }
        .with_fault(fault)
    }
}
